"""Requests are decoded after authentication, in one place, for every service.

gRPC would parse a request with the deserializer a service was registered with before any
interceptor's behaviour runs: an unauthenticated caller could make the server parse
anything, and bytes that are not the message got UNKNOWN with the parser's exception text
and a logged traceback per call. :func:`decode_late` turns a method handler into one whose
gRPC deserializer passes the bytes through and whose behaviour parses them itself, so the
interceptors (:mod:`holo.server.interceptors`) refuse a call without a valid token before
a byte is parsed, and a request that does not parse is INVALID_ARGUMENT in one line, with
a rate-limited log line. Client-streaming requests are decoded message by message.

The same place bounds ids: every holo id is 1 to 128 characters (``ModelId`` in
``proto/holo/v1/common.proto``), so a longer one is refused here, before a servicer looks
it up or echoes it.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc import aio

from holo.server.ratelog import RateLimitedLog

__all__ = ["MAX_ID_CHARS", "Behavior", "Wrapper", "check_ids", "decode_late", "wrap_handler"]

logger = logging.getLogger(__name__)
_log = RateLimitedLog(logger)

#: Longest id a request may carry: the format of every holo id (common.proto).
MAX_ID_CHARS = 128
#: How deep check_ids looks into nested request messages (ids sit at depth 1 or 2).
_ID_DEPTH = 4

Behavior = Callable[..., Any]
#: ``wrap(behavior, response_streaming)`` -> the wrapped behaviour.
Wrapper = Callable[[Behavior, bool], Behavior]


def wrap_handler(
    handler: grpc.RpcMethodHandler,
    wrap: Wrapper,
    *,
    pass_bytes: bool = False,
) -> grpc.RpcMethodHandler:
    """The same handler (any of the four kinds) with its behaviour wrapped; its request
    deserializer kept, or none with ``pass_bytes`` (the behaviour is given the bytes)."""
    decode = None if pass_bytes else handler.request_deserializer
    kinds = (
        (handler.unary_unary, grpc.unary_unary_rpc_method_handler, False),
        (handler.unary_stream, grpc.unary_stream_rpc_method_handler, True),
        (handler.stream_unary, grpc.stream_unary_rpc_method_handler, False),
        (handler.stream_stream, grpc.stream_stream_rpc_method_handler, True),
    )
    for behavior, make, streaming in kinds:
        if behavior is not None:
            if streaming and inspect.iscoroutinefunction(behavior):
                behavior = _writer_as_generator(behavior)
            return make(
                wrap(behavior, streaming),
                request_deserializer=decode,
                response_serializer=handler.response_serializer,
            )
    return handler


def _writer_as_generator(behavior: Behavior) -> Behavior:
    """A streaming behaviour that writes its replies (``await context.write(...)``) and
    returns, as grpc.aio allows (grpc_health's ``Watch`` does), made an async generator
    that yields nothing: every wrapper iterates what a streaming behaviour returns."""

    async def replies(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        await behavior(request, context)
        return
        yield  # pragma: no cover  (makes this an async generator)

    return replies


def _message_name(decode: Callable[[bytes], Any]) -> str:
    kind = getattr(decode, "__self__", None)  # Message.FromString is a bound classmethod
    descriptor = getattr(kind, "DESCRIPTOR", None)
    return getattr(descriptor, "full_name", "request message")


@functools.cache
def _id_plan(descriptor: Descriptor, depth: int = 0) -> tuple[tuple[FieldDescriptor, str], ...]:
    """Where a message of this type holds ids: (field, how) with how one of ``"string"``
    (a ``*_id`` string), ``"wrapped"`` (a ``*Id`` message's ``value``) or ``"nested"``
    (a message that holds ids). Repeated fields of other messages (points of a stroke)
    are not walked: no id sits in them, and walking them would cost per point."""
    plan: list[tuple[FieldDescriptor, str]] = []
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING and (
            field.name == "id" or field.name.endswith("_id")
        ):
            plan.append((field, "string"))
        elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
            inner = field.message_type
            if inner.name.endswith("Id") and [f.name for f in inner.fields] == ["value"]:
                plan.append((field, "wrapped"))
            elif (
                depth < _ID_DEPTH
                and not _repeated(field)
                and inner.full_name.startswith("holo.")
                and _id_plan(inner, depth + 1)
            ):
                plan.append((field, "nested"))
    return tuple(plan)


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)  # protobuf 6+ (``label`` is gone)


def check_ids(message: Message, *, prefix: str = "", depth: int = 0) -> str | None:
    """The first id in ``message`` longer than :data:`MAX_ID_CHARS`, as an error message
    naming the field (never the id itself), or None when every id fits."""
    for field, how in _id_plan(message.DESCRIPTOR, depth):
        name = f"{prefix}{field.name}"
        value = getattr(message, field.name)
        items = value if _repeated(field) else (value,)
        for index, item in enumerate(items):
            if _repeated(field):
                name = f"{prefix}{field.name}[{index}]"
            if how == "nested":
                if message.HasField(field.name):
                    found = check_ids(item, prefix=f"{name}.", depth=depth + 1)
                    if found:
                        return found
                continue
            text = item.value if how == "wrapped" else item
            if len(text) > MAX_ID_CHARS:
                return (
                    f"{name} is {len(text)} characters long; holo ids are 1 to "
                    f"{MAX_ID_CHARS} characters (see ModelId in holo/v1/common.proto)"
                )
    return None


async def _parse(
    raw: Any, decode: Callable[[bytes], Any], method: str, context: aio.ServicerContext
) -> Any:
    """``raw`` parsed by ``decode``; on failure the call ends INVALID_ARGUMENT."""
    if not isinstance(raw, bytes):  # already parsed (a handler called directly, in tests)
        return raw
    try:
        request = decode(raw)
    except Exception:  # DecodeError, or anything else the parser raises: not this message
        name = _message_name(decode)
        _log.log(logging.WARNING, "undecodable", "%s: a request was not a valid %s", method, name)
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request is not a valid {name}; check the client's proto version",
        )
    if isinstance(request, Message) and request.DESCRIPTOR.full_name.startswith("holo."):
        problem = check_ids(request)
        if problem is not None:
            _log.log(logging.INFO, "long id", "%s: %s", method, problem)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
    return request


def decode_late(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """``handler`` with its request parsed inside its behaviour rather than by gRPC (see
    the module docstring). A handler without a deserializer is returned as it is."""
    decode = handler.request_deserializer
    if decode is None:
        return handler
    request_streaming = handler.stream_unary is not None or handler.stream_stream is not None

    def decoding(behavior: Behavior, streaming: bool) -> Behavior:
        if request_streaming:

            def requests(raw: AsyncIterator[Any], context: aio.ServicerContext) -> Any:
                async def parsed() -> AsyncIterator[Any]:
                    async for item in raw:
                        yield await _parse(item, decode, method, context)

                return parsed()

            if streaming:

                async def stream_stream(raw: Any, context: aio.ServicerContext) -> Any:
                    async for item in behavior(requests(raw, context), context):
                        yield item

                return stream_stream

            async def stream_unary(raw: Any, context: aio.ServicerContext) -> Any:
                return await behavior(requests(raw, context), context)

            return stream_unary
        if streaming:

            async def unary_stream(raw: Any, context: aio.ServicerContext) -> Any:
                replies = behavior(await _parse(raw, decode, method, context), context)
                if hasattr(replies, "__aiter__"):
                    async for item in replies:
                        yield item
                else:  # a synchronous behaviour (grpc.aio allows them)
                    for item in replies:
                        yield item

            return unary_stream

        async def unary_unary(raw: Any, context: aio.ServicerContext) -> Any:
            reply = behavior(await _parse(raw, decode, method, context), context)
            return await reply if inspect.isawaitable(reply) else reply

        return unary_unary

    return wrap_handler(handler, decoding, pass_bytes=True)
