"""The web port: every holo.v1 service over gRPC-Web and Connect, and the web client's files.

``holo serve --web HOST:PORT`` adds this listener beside the native gRPC port, in the same
process and event loop. Browsers cannot speak native gRPC (they see no HTTP/2 trailers), and
HoloLens 2's ``GrpcWebHandler`` sends ``application/grpc-web`` over HTTP/1.1; this port
serves both, and Connect, from one ASGI application under hypercorn (HTTP/1.1 and HTTP/2,
TLS with the native port's certificate).

Why these libraries (README "The web port" has the measurements):

- ``connectrpc`` speaks the three protocols (gRPC-Web binary and text, Connect, h2c gRPC),
  with deadlines, compression, mid-stream errors and empty streams, and is maintained by the
  Connect authors. ``sonora`` was the other candidate: unmaintained since 2023, it sends unary
  trailers as a bytes repr and breaks mid-stream errors, empty streams and CORS.
- ``hypercorn`` is the ASGI server that gives ``connectrpc`` HTTP trailers (the ASGI
  trailers extension) and HTTP/2 on one port; it runs in the loop grpc.aio already runs in.
- ``starlette`` serves the page's files (:mod:`holo.server.page`) and answers CORS
  pre-flights.

There is no second copy of any servicer: each call is resolved through the same
:class:`~holo.server.handlers.HandlerTable` the native port uses, with the same
interceptors. Requests pass through as bytes (:class:`_PassThrough`) so they are parsed
after the token check, as on the native port (:mod:`holo.server.decoding`); only the
binary protobuf encoding is served (Connect's JSON would have to parse before that check).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.protobuf.descriptor import ServiceDescriptor
from grpc import aio
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from holo.server.handlers import HandlerTable
from holo.server.page import SecurityHeaders, page_app

__all__ = ["EXPOSED_HEADERS", "WebPort", "start_web", "web_app"]

logger = logging.getLogger(__name__)

#: Response headers a page of another origin (--web-origin) must be able to read.
EXPOSED_HEADERS = (
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "holo-expected-offset",
    "trailer-holo-expected-offset",
    "holo-retry-after-ms",
    "trailer-holo-retry-after-ms",
)
#: Request headers gRPC-Web and Connect clients send.
_ALLOWED_HEADERS = (
    "authorization",
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "connect-protocol-version",
    "connect-timeout-ms",
    "connect-content-encoding",
    "connect-accept-encoding",
)

#: gRPC's CANCELLED is Connect's CANCELED; every other code has the same name.
_CODES = {s: Code[s.name] for s in grpc.StatusCode if s.name in Code.__members__}
_CODES[grpc.StatusCode.CANCELLED] = Code.CANCELED


class _PassThrough:
    """The "proto" codec, without parsing: requests reach the handler as bytes (parsed after
    the token check) and replies leave as the bytes the handler's serializer made."""

    def name(self) -> str:
        return "proto"

    def encode(self, message: Any) -> bytes:
        return bytes(message)

    def decode(self, data: bytes | bytearray, message_class: Any) -> bytes:
        return bytes(data)


class _WebContext:
    """The part of grpc.aio's ServicerContext holo's interceptors and servicers use."""

    def __init__(self, ctx: RequestContext[Any, Any], metadata: tuple[tuple[str, str], ...]):
        self._ctx = ctx
        self._metadata = metadata
        self.code = grpc.StatusCode.UNKNOWN
        self.details = ""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def set_trailing_metadata(self, metadata: Iterable[tuple[str, str | bytes]]) -> None:
        for key, value in metadata:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
            self._ctx.response_trailers[key] = text

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> None:
        self.code, self.details = code, details
        if trailing_metadata:
            self.set_trailing_metadata(trailing_metadata)
        raise aio.AbortError()

    def error(self) -> ConnectError:
        return ConnectError(_CODES.get(self.code, Code.UNKNOWN), self.details)


def _metadata(ctx: RequestContext[Any, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((key.lower(), value) for key, value in ctx.request_headers.allitems())


def _endpoints(table: HandlerTable, services: Sequence[ServiceDescriptor]) -> dict[str, Any]:
    """An endpoint per method of ``services``, each calling the table's handler."""
    endpoints: dict[str, Any] = {}
    for service in services:
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            info: MethodInfo[bytes, bytes] = MethodInfo(
                name=method.name,
                service_name=service.full_name,
                input=bytes,
                output=bytes,
                idempotency_level=IdempotencyLevel.UNKNOWN,
                stream_type=(
                    StreamType.SERVER_STREAM if method.server_streaming else StreamType.UNARY
                ),
            )
            if method.server_streaming:
                endpoints[path] = Endpoint.server_stream(info, _streamer(table, path))
            else:
                endpoints[path] = Endpoint.unary(info, _caller(table, path))
    return endpoints


async def _resolve(table: HandlerTable, path: str, metadata: Any) -> grpc.RpcMethodHandler:
    handler = await table.resolve(path, metadata)
    if handler is None:
        raise ConnectError(Code.UNIMPLEMENTED, f"{path} is not served here")
    return handler


def _caller(table: HandlerTable, path: str) -> Any:
    async def call(request: bytes, ctx: RequestContext[bytes, bytes]) -> bytes:
        metadata = _metadata(ctx)
        handler = await _resolve(table, path, metadata)
        context = _WebContext(ctx, metadata)
        try:
            reply = await handler.unary_unary(request, context)
        except aio.AbortError:
            raise context.error() from None
        return handler.response_serializer(reply)

    return call


def _streamer(table: HandlerTable, path: str) -> Any:
    async def stream(request: bytes, ctx: RequestContext[bytes, bytes]) -> AsyncIterator[bytes]:
        metadata = _metadata(ctx)
        handler = await _resolve(table, path, metadata)
        context = _WebContext(ctx, metadata)
        serialize = handler.response_serializer
        replies = handler.unary_stream(request, context)
        try:
            async for reply in replies:
                yield serialize(reply)
        except aio.AbortError:
            raise context.error() from None
        finally:
            await replies.aclose()  # the servicer's cleanup (a participant leaves) runs now

    return stream


class _Rpc(ConnectASGIApplication[None]):
    @property
    def path(self) -> str:
        return "/"


def web_app(
    table: HandlerTable,
    services: Sequence[ServiceDescriptor],
    *,
    root: Path | None,
    origins: Sequence[str] = (),
    tls: bool = False,
    read_max_bytes: int,
) -> ASGIApp:
    """The web port's ASGI application: RPCs under ``/holo.v1.*``, the page elsewhere."""
    rpc = _Rpc(
        service=None,
        endpoints=lambda _: _endpoints(table, services),
        read_max_bytes=read_max_bytes,
        codecs=[_PassThrough()],
    )
    page = page_app(root)

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"].startswith("/holo."):
            await rpc(scope, receive, send)
        elif scope["method"] in ("GET", "HEAD"):
            await page(scope, receive, send)
        else:
            await _method_not_allowed(send)

    app: ASGIApp = route
    if origins:
        app = CORSMiddleware(
            app,
            allow_origins=list(origins),
            allow_methods=["GET", "POST"],
            allow_headers=list(_ALLOWED_HEADERS),
            expose_headers=list(EXPOSED_HEADERS),
            max_age=600,
        )
    return SecurityHeaders(app, tls)


async def _method_not_allowed(send: Send) -> None:
    await send(
        {"type": "http.response.start", "status": 405, "headers": [(b"allow", b"GET, HEAD")]}
    )
    await send({"type": "http.response.body", "body": b""})


@dataclass
class WebPort:
    """A running web listener."""

    port: int
    task: asyncio.Task[None]
    shutdown: asyncio.Event

    async def stop(self, grace: float) -> None:
        """Refuse new connections, let calls finish for up to ``grace`` seconds."""
        self.shutdown.set()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), grace + 1)
        except TimeoutError:
            self.task.cancel()
        except Exception as err:  # the listener failed earlier; say so once
            logger.error("the web listener failed: %s", err)


def _bind(host: str, port: int) -> socket.socket:
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if host == "localhost":
        host, family = "127.0.0.1", socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


async def start_web(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_client_ca: Path | None,
    grace_s: float,
) -> WebPort:
    """Listen on ``host:port`` (0: a free port) and serve ``app`` in this event loop.

    Raises OSError when the address cannot be bound.
    """
    sock = await asyncio.to_thread(_bind, host, port)
    bound = sock.getsockname()[1]
    config = HypercornConfig()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the socket from here on
    config.accesslog = None  # no request lines: nothing a caller sends is logged
    config.errorlog = logging.getLogger("holo.server.web.http")
    config.include_server_header = False
    config.graceful_timeout = grace_s
    # Session streams are long-lived and mostly idle between events: keep idle HTTP/1.1
    # connections as long as the SDK's keepalive (20 s) plus a margin.
    config.keep_alive_timeout = 30
    if tls_cert is not None and tls_key is not None:
        config.certfile = str(tls_cert)
        config.keyfile = str(tls_key)
        if tls_client_ca is not None:
            config.ca_certs = str(tls_client_ca)
            config.verify_mode = ssl.CERT_REQUIRED
    shutdown = asyncio.Event()
    task = asyncio.create_task(
        hypercorn_serve(app, config, shutdown_trigger=shutdown.wait),  # type: ignore[arg-type]
        name="web listener",
    )
    return WebPort(bound, task, shutdown)
