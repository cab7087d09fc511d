"""Channels to a holo node, the token every call carries, and what a failed call raises.

gRPC shares one TCP connection among the channels of a process that have the same target
and options; the asyncio channels here each get their own, as separate headsets have.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from holo.errors import HoloError

__all__ = [
    "CHANNEL_OPTIONS",
    "ClientError",
    "aio_channel_for",
    "call_metadata",
    "channel_for",
    "client_error",
    "read_ca",
]

#: What a client may buffer (a chunk and its envelope, and the server's messages), and how
#: it reconnects.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 8 << 20),
    # Reconnect quickly after a drop (a headset on hospital Wi-Fi); gRPC's default starts at 1 s.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # Detect a dead connection during a long download (the server permits these pings).
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]


class ClientError(HoloError):
    """A call failed; ``code`` is the gRPC status code, the message the server's."""

    def __init__(self, message: str, *, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.code = code


def client_error(err: grpc.RpcError) -> ClientError:
    """The :class:`ClientError` for a failed call: ``CODE: the server's message``."""
    code = err.code() if isinstance(err, grpc.Call | aio.AioRpcError) else grpc.StatusCode.UNKNOWN
    details = err.details() if isinstance(err, grpc.Call | aio.AioRpcError) else str(err)
    return ClientError(f"{code.name}: {details}", code=code)


def call_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata every call carries: ``token`` (default ``$HOLO_TOKEN``) as a bearer."""
    token = token if token is not None else os.environ.get("HOLO_TOKEN", "")
    return (("authorization", f"Bearer {token}"),) if token else ()


def read_ca(ca: str | os.PathLike[str] | bytes | None) -> bytes | None:
    """A CA certificate given as PEM bytes or as a path to them."""
    return Path(ca).read_bytes() if isinstance(ca, (str, os.PathLike)) else ca


def channel_for(
    server: str,
    *,
    ca: bytes | None = None,
    insecure: bool = False,
    own_connection: bool = False,
    client_cert: tuple[bytes, bytes] | None = None,
) -> grpc.Channel:
    """A blocking channel to ``server`` (HOST:PORT): TLS with ``ca`` (or the system's
    roots), or plain text when ``insecure``; ``own_connection`` gives it a TCP connection
    of its own (the simulator and benchmarks use it)."""
    options = list(CHANNEL_OPTIONS)
    if own_connection:
        options.append(("grpc.use_local_subchannel_pool", 1))
    if insecure:
        return grpc.insecure_channel(server, options=options)
    cert_chain, private_key = client_cert if client_cert is not None else (None, None)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=private_key, certificate_chain=cert_chain
    )
    return grpc.secure_channel(server, credentials, options=options)


def aio_channel_for(
    server: str,
    *,
    ca: bytes | None = None,
    insecure: bool = False,
    extra_options: Sequence[tuple[str, Any]] = (),
) -> aio.Channel:
    """An asyncio channel to ``server`` with a TCP connection of its own, as a headset
    has (the session and video SDKs)."""
    options = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1), *extra_options]
    if insecure:
        return aio.insecure_channel(server, options=options)
    return aio.secure_channel(
        server, grpc.ssl_channel_credentials(root_certificates=ca), options=options
    )
