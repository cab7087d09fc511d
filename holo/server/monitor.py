"""Prometheus metrics of a running server: the call counter and the scrape endpoint.

:class:`MetricsInterceptor` (outermost, so it sees the status the others set) counts every
call of both ports by method and status code, its duration, its messages, and the response
streams open by kind. :class:`Exporter` serves :data:`holo.metrics.REGISTRY` over HTTP
(``holo serve --metrics HOST:PORT``; HTTPS with the server's certificate when it has one)
and samples what the server holds when scraped (:func:`server_samples`): participants by
role, sessions, video viewers, jobs running and queued, the store's totals.

The metrics themselves, with their meanings, are in :mod:`holo.metrics`. Labels are the
method (one of the server's own, a bounded set), the status code's name and the stream
kind: never an id of a case, session or participant, never a patient.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from holo import metrics
from holo.extras import need
from holo.jobs import JobRunner
from holo.server.decoding import Behavior, wrap_handler
from holo.session import SessionHub
from holo.store import Store
from holo.video.hub import VideoHub

__all__ = ["STREAM_KINDS", "Exporter", "MetricsInterceptor", "server_samples"]

logger = logging.getLogger(__name__)

#: The kind of each response stream: what ``holo_open_streams`` counts.
STREAM_KINDS = {
    "/holo.v1.SessionService/Join": "session",
    "/holo.v1.VideoService/WatchVideo": "video",
    "/holo.v1.ConversionService/WatchJob": "job",
    "/holo.v1.AssetService/GetModel": "model",
    "/holo.v1.PacsService/WatchPull": "pull",
    "/grpc.health.v1.Health/Watch": "health",
}
#: How long a scrape waits for the event loop to sample what it holds.
_SAMPLE_TIMEOUT_S = 2.0
#: The store's totals are asked at most this often (one SQL query; holo.metrics.Cached).
STORE_SAMPLE_S = 30.0


def _code(context: Any) -> str:
    """The status code a call was ended with (grpc.aio's context has ``code()``; the web
    port's has a ``code`` attribute)."""
    code = getattr(context, "code", None)
    if callable(code):
        code = code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


class _Counted:
    """The metric children of one method, looked up once (a label lookup takes a lock)."""

    def __init__(self, method: str) -> None:
        self.started = metrics.RPC_STARTED.labels(method)
        self.duration = metrics.RPC_DURATION.labels(method)
        self.received = metrics.RPC_RECEIVED.labels(method)
        self.sent = metrics.RPC_SENT.labels(method)
        self.method = method

    def handled(self, code: str, started: float) -> None:
        metrics.RPC_HANDLED.labels(self.method, code).inc()
        self.duration.observe(time.monotonic() - started)


class MetricsInterceptor(aio.ServerInterceptor):
    """Counts every call: started, handled by code, duration, messages, open streams."""

    def __init__(self) -> None:
        super().__init__()
        self._methods: dict[str, _Counted] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: grpc answers UNIMPLEMENTED, nothing to label
            return handler
        method = handler_call_details.method
        counted = self._methods.get(method)
        if counted is None:  # the server's own methods only: a bounded set
            counted = self._methods[method] = _Counted(method)
        request_streaming = bool(handler.request_streaming)
        kind = STREAM_KINDS.get(method) or method.rsplit("/", 1)[-1].lower()

        def requests(request: Any) -> Any:
            if not request_streaming:
                counted.received.inc()
                return request

            async def each() -> AsyncIterator[Any]:
                async for message in request:
                    counted.received.inc()
                    yield message

            return each()

        def count(behavior: Behavior, streaming: bool) -> Behavior:
            if streaming:

                async def stream(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
                    started, code = time.monotonic(), "OK"
                    counted.started.inc()
                    open_streams = metrics.OPEN_STREAMS.labels(kind)
                    open_streams.inc()
                    try:
                        async for item in behavior(requests(request), context):
                            counted.sent.inc()
                            yield item
                    except aio.AbortError:
                        code = _code(context)
                        raise
                    except (asyncio.CancelledError, GeneratorExit):  # the caller went away
                        code = "CANCELLED"
                        raise
                    except BaseException:
                        code = "UNKNOWN"
                        raise
                    finally:
                        open_streams.dec()
                        counted.handled(code, started)

                return stream

            async def unary(request: Any, context: aio.ServicerContext) -> Any:
                started, code = time.monotonic(), "OK"
                counted.started.inc()
                try:
                    reply = await behavior(requests(request), context)
                    counted.sent.inc()
                    return reply
                except aio.AbortError:
                    code = _code(context)
                    raise
                except asyncio.CancelledError:
                    code = "CANCELLED"
                    raise
                except BaseException:
                    code = "UNKNOWN"
                    raise
                finally:
                    counted.handled(code, started)

            return unary

        return wrap_handler(handler, count)


def server_samples(hub: SessionHub, video: VideoHub, jobs: JobRunner) -> list[metrics.Sample]:
    """What this node holds now, by role where it has one; on the event loop (the hubs'
    maps change there)."""
    roles: collections.Counter[str] = collections.Counter()
    sessions = hub.sessions()
    for live in sessions:
        roles.update(p.role for p in live.state.participants.values())
    samples: list[metrics.Sample] = [
        ("holo_session_participants", (role,), float(count)) for role, count in roles.items()
    ]
    samples.append(("holo_sessions_live", (), float(len(sessions))))
    viewers = sum(track.viewers for track in list(video.tracks.values()))
    samples.append(("holo_video_viewers", (), float(viewers)))
    samples.append(("holo_jobs_running", (), float(jobs.running)))
    return samples


def store_samples(store: Store) -> list[metrics.Sample]:
    """The store's totals (one catalog query; off the event loop, in the scrape thread)."""
    totals = store.totals()
    return [
        ("holo_jobs_queued", (), float(totals["queued"])),
        ("holo_store_blob_bytes", (), float(totals["blob_bytes"])),
        ("holo_store_studies", (), float(totals["studies"])),
        ("holo_store_models", (), float(totals["models"])),
    ]


class Exporter:
    """The metrics endpoint: ``GET /metrics`` (any path) on ``host:port``, in a thread of
    its own (prometheus_client's HTTP server), so a scrape costs the event loop only the
    sampling of what the hubs hold.

    Parameters
    ----------
    loop
        The server's event loop, where the hubs are sampled.
    tls
        ``(cert, key, client_ca)`` paths to serve HTTPS (``client_ca`` None: no client
        certificate asked); None for plain HTTP (the caller checked the address is
        loopback).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        loop: asyncio.AbstractEventLoop,
        hub: SessionHub,
        video: VideoHub,
        jobs: JobRunner,
        store: Store,
        tls: tuple[str, str, str | None] | None = None,
    ) -> None:
        need("server", "prometheus_client", feature="holo serve --metrics")
        import prometheus_client

        def on_loop() -> list[metrics.Sample]:
            if loop.is_closed():
                return []
            future = asyncio.run_coroutine_threadsafe(_sample(hub, video, jobs), loop)
            return future.result(_SAMPLE_TIMEOUT_S)

        self._removers = [
            metrics.SAMPLED_SOURCES.add(on_loop),
            metrics.SAMPLED_SOURCES.add(
                metrics.Cached(lambda: store_samples(store), STORE_SAMPLE_S)
            ),
        ]
        cert, key, client_ca = tls if tls is not None else (None, None, None)
        try:
            self._httpd, self._thread = prometheus_client.start_http_server(
                port,
                addr=host.strip("[]"),
                registry=metrics.REGISTRY,
                certfile=cert,
                keyfile=key,
                client_cafile=client_ca,
                client_auth_required=client_ca is not None,
            )
        except BaseException:
            self._forget_sources()
            raise
        self.port: int = self._httpd.server_port

    def _forget_sources(self) -> None:
        for remove in self._removers:
            remove()

    def stop(self) -> None:
        """Stop serving (blocks until the listener's thread ends: off the event loop)."""
        self._forget_sources()
        self._httpd.shutdown()
        self._httpd.server_close()


async def _sample(hub: SessionHub, video: VideoHub, jobs: JobRunner) -> list[metrics.Sample]:
    return server_samples(hub, video, jobs)
