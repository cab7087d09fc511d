"""Send every RPC's request decoding through its handler on a real in-process server.

One :class:`~holo.testing.TestServer` (port 0, plain text, a temporary data folder) is
started at the first input and serves every input. An input's first byte picks a method
of :data:`~holo.server.interceptors.METHOD_ROLES`, its second byte a role allowed to call
it; the rest is sent as the raw request bytes (no serializer: the server decodes them,
:mod:`holo.server.decoding`) with a valid token for that role and case ``case-1``. A
server-streaming call is cancelled after its first message or 0.5 s.

Documented outcome: any status code except INTERNAL and UNKNOWN: the server maps an
unexpected exception to INTERNAL with a log reference, so either is a crash (the
assertion names the method; the server's traceback is on stderr). Every 64 inputs a
health check must answer SERVING.

Coverage-light: atheris instruments ``holo``, but the handlers run on the server's
threads, which libFuzzer's coverage sees only in part. Treat this as a structured random
pass over the request decoders and handlers, not a coverage-guided one.
"""

from __future__ import annotations

import atexit
import logging
import sys
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports(include=["holo"]):
    import grpc
    from google.protobuf import descriptor_pool, message_factory
    from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    import holo.v1.asset_pb2
    import holo.v1.clock_pb2
    import holo.v1.pacs_pb2
    import holo.v1.session_pb2
    import holo.v1.video_pb2  # noqa: F401  (registers the services' descriptors)
    from holo.server.interceptors import METHOD_ROLES
    from holo.server.ratelimit import RateLimits
    from holo.testing import TestServer

from common import fuzz, scratch_folder

CASE = "case-1"
METHODS = sorted(METHOD_ROLES)
STREAM_WAIT_S = 0.5
UNARY_WAIT_S = 4.0  # below libFuzzer's -timeout (5 s): a slow call fails here, named
HEALTH_EVERY = 64


def _descriptor(path: str) -> MethodDescriptor:
    service, method = path[1:].split("/")
    found: MethodDescriptor = (
        descriptor_pool.Default().FindServiceByName(service).FindMethodByName(method)
    )
    return found


class _Harness:
    """The server, a channel to it, one callable and token per (method, role)."""

    def __init__(self) -> None:
        data = scratch_folder() / "data"
        # No rate limit (0 turns one off): refusals for speed would hide the handlers.
        limits = RateLimits(
            **{name: 0 for name in RateLimits.__dataclass_fields__ if name != "streams"}
        )
        self.server = TestServer(data, max_upload_bytes=1 << 20, rate_limits=limits).start()
        atexit.register(self.server.stop)
        self.channel = grpc.insecure_channel(
            self.server.address, options=[("grpc.so_reuseport", 0)]
        )
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.calls: dict[str, Any] = {}
        self.tokens = {role: self.server.token(role, CASE) for role in _all_roles()}
        for path in METHODS:
            if _descriptor(path).server_streaming:
                self.calls[path] = self.channel.unary_stream(path)
            else:
                self.calls[path] = self.channel.unary_unary(path)
        self.inputs = 0

    def check_health(self) -> None:
        reply = self.health.Check(health_pb2.HealthCheckRequest(), timeout=UNARY_WAIT_S)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, reply

    def call(self, path: str, role: str, request: bytes) -> grpc.StatusCode:
        metadata = (("authorization", f"Bearer {self.tokens[role]}"),)
        if not _descriptor(path).server_streaming:
            try:
                self.calls[path](request, metadata=metadata, timeout=UNARY_WAIT_S)
            except grpc.RpcError as err:
                return err.code()  # type: ignore[attr-defined, no-any-return]
            return grpc.StatusCode.OK
        stream = self.calls[path](request, metadata=metadata, timeout=STREAM_WAIT_S)
        try:
            next(stream, None)
        except grpc.RpcError as err:
            return err.code()  # type: ignore[attr-defined, no-any-return]
        finally:
            stream.cancel()
        return grpc.StatusCode.OK


def _all_roles() -> list[str]:
    return sorted(set().union(*METHOD_ROLES.values()))


_harness: _Harness | None = None


def test_one_input(data: bytes) -> None:
    global _harness
    if _harness is None:
        _harness = _Harness()
        # The server's unexpected errors are what this harness looks for: show them.
        logging.disable(logging.NOTSET)
        logging.basicConfig(level=logging.CRITICAL, stream=sys.stderr)
        logging.getLogger("holo.server.interceptors").setLevel(logging.ERROR)
        _harness.check_health()
    if len(data) < 2:
        return
    path = METHODS[data[0] % len(METHODS)]
    roles = sorted(METHOD_ROLES[path])
    role = roles[data[1] % len(roles)]
    code = _harness.call(path, role, data[2:])
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
        f"{path} as {role}: {code.name} for a request of {len(data) - 2} bytes "
        f"({data[2:66].hex()}...)"
    )
    _harness.inputs += 1
    if _harness.inputs % HEALTH_EVERY == 0:
        _harness.check_health()


def _filled(descriptor: Descriptor, depth: int = 0) -> Any:
    """A request with every field set to a plausible value (ids ``case-1``, numbers 1)."""
    message = message_factory.GetMessageClass(descriptor)()
    for field in descriptor.fields:
        value: Any
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3 or field.message_type.GetOptions().map_entry:
                continue
            sub = _filled(field.message_type, depth + 1)
            if field.is_repeated:
                getattr(message, field.name).append(sub)
            else:
                getattr(message, field.name).CopyFrom(sub)
            continue
        if field.type == FieldDescriptor.TYPE_STRING:
            value = CASE if field.name in ("value", "case_id") else "x"
        elif field.type == FieldDescriptor.TYPE_BYTES:
            value = b"\0" * 8
        elif field.type == FieldDescriptor.TYPE_BOOL:
            value = True
        elif field.type == FieldDescriptor.TYPE_ENUM:
            value = field.enum_type.values[-1].number
        elif field.cpp_type == FieldDescriptor.CPPTYPE_FLOAT or (
            field.cpp_type == FieldDescriptor.CPPTYPE_DOUBLE
        ):
            value = 1.0
        else:
            value = 1
        if field.is_repeated:
            getattr(message, field.name).append(value)
        else:
            setattr(message, field.name, value)
    return message


def write_seeds(folder: Path) -> None:
    for index, path in enumerate(METHODS):
        name = path.rsplit("/", 1)[1]
        request_type = _descriptor(path).input_type
        for role_index in range(len(METHOD_ROLES[path])):
            prefix = bytes([index, role_index])
            (folder / f"{name}_{role_index}_empty").write_bytes(prefix)
            filled = _filled(request_type).SerializeToString()
            (folder / f"{name}_{role_index}_filled").write_bytes(prefix + filled)


if __name__ == "__main__":
    fuzz(test_one_input, write_seeds)
