"""Wiring of the holo server: store, job runner, hubs, servicers, interceptors, TLS, health.

``holo serve`` runs :func:`serve`; tests and benchmarks start the same server in-process
with :class:`holo.testing.TestServer`. The grpc.aio skeleton follows grpc's own examples:
``asyncio.run``, a graceful ``server.stop(grace)`` on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import signal
import socket
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from holo.audit import AuditLog
from holo.auth import (
    MAX_TOKEN_TTL_S,
    RevocationList,
    load_deid_salt,
    load_secret,
    revocation_path,
)
from holo.errors import InvalidRequestError
from holo.imaging.sources import ZipLimits
from holo.jobs import DEFAULT_LEASE_S, JobRunner
from holo.pacs import PacsNodes
from holo.pacs.nodes import check_ae_title
from holo.pacs.pulls import PullRunner
from holo.pacs.receive import DEFAULT_QUIET_S
from holo.pacs.rules import parse_rules
from holo.quietgc import keep_collections_young
from holo.recording.hub import RecordingHub
from holo.server.access import SessionAccess
from holo.server.asset_service import AssetServicer
from holo.server.bus_health import BUS_SERVICES, watch_bus
from holo.server.clock_service import ClockServicer
from holo.server.conversion_service import ConversionServicer
from holo.server.dicom_port import DicomPort, DicomPortConfig
from holo.server.fairpool import FairPool
from holo.server.handlers import HandlerTable
from holo.server.health_board import HealthBoard
from holo.server.interceptors import AuthInterceptor, ErrorInterceptor
from holo.server.memtrace import install as install_memtrace
from holo.server.monitor import Exporter, MetricsInterceptor
from holo.server.pacs_service import PacsServicer
from holo.server.page import default_web_root
from holo.server.ratelimit import RateLimiter, RateLimitInterceptor, RateLimits
from holo.server.session_service import (
    MAX_RECEIVE_BYTES,
    SessionServicer,
    add_session_servicer,
)
from holo.server.store_health import watch_store
from holo.server.upload_service import UploadServicer, expire_uploads
from holo.server.video_service import VideoServicer, add_video_servicer
from holo.server.web import WebPort, start_web, web_app
from holo.session import Bus, HubConfig, MemoryBus, SessionHub
from holo.store import Store
from holo.store.records import check_case_id
from holo.store.space import DEFAULT_MIN_FREE
from holo.v1 import (
    asset_pb2,
    asset_pb2_grpc,
    clock_pb2,
    clock_pb2_grpc,
    pacs_pb2,
    pacs_pb2_grpc,
    session_pb2,
    video_pb2,
)
from holo.video.hub import VideoHub

__all__ = ["RunningServer", "ServerConfig", "is_loopback", "serve", "start_server"]

logger = logging.getLogger(__name__)

#: The holo.v1 services this server offers, on both ports (health and reflection, which
#: name them, stay on the native port).
SERVICES = tuple(
    pb.DESCRIPTOR.services_by_name[name]
    for pb, name in (
        (asset_pb2, "UploadService"),
        (asset_pb2, "ConversionService"),
        (asset_pb2, "AssetService"),
        (session_pb2, "SessionService"),
        (clock_pb2, "ClockService"),
        (video_pb2, "VideoService"),
        (pacs_pb2, "PacsService"),
    )
)
SERVICE_NAMES = tuple(service.full_name for service in SERVICES)


@dataclass
class ServerConfig:
    """What ``holo serve`` is given."""

    data: Path
    listen: str = "127.0.0.1:50051"
    # Where the store keeps metadata and blobs: empty for the data folder (SQLite and a
    # blob folder: one node); postgresql://... and s3://... for nodes sharing them.
    store: str = ""
    blobs: str = ""
    s3_endpoint: str = ""  # https://HOST:PORT of the object store (or HOLO_S3_ENDPOINT)
    s3_ca: str = ""  # the CA of its certificate, PEM (or HOLO_S3_CA; else the system's)
    node: str = ""  # this node's name in the jobs it runs (default host-pid)
    job_lease_s: float = DEFAULT_LEASE_S  # a dead node's job is taken over after this
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # mutual TLS: clients must present a certificate it signed
    insecure: bool = False
    workers: int = 1
    # Threads that index uploaded studies (headers, zips), apart from the RPCs' store
    # calls; callers take turns (holo.server.fairpool says why 2).
    index_workers: int = 2
    max_upload_bytes: int = 8 << 30
    min_free: str | int = DEFAULT_MIN_FREE  # free space new uploads leave (holo.store.space)
    # An unfinished upload nothing was written to for this long is forgotten and its
    # partial file deleted: a day lets a user resume the next morning.
    upload_max_age_s: float = 24 * 3600.0
    # What an uploaded zip may expand to (holo.imaging.sources.ZipLimits says why 4 GiB).
    max_unzipped_bytes: int = 4 << 30
    model_chunk_bytes: int = 1 << 20  # GetModel's data messages (at most 1 MiB)
    bus: str = "memory"  # or redis://HOST:PORT/DB: sessions shared with other nodes
    secret_file: Path | None = None  # default <data>/secret.key; shared by the nodes of a bus
    max_token_ttl_s: int = MAX_TOKEN_TTL_S  # longer-lived tokens are refused (holo.auth)
    media: Path | None = None  # video files a presenter may play into a session; <data>/media
    recordings: Path | None = None  # session recordings; <data>/recordings
    session: HubConfig = field(default_factory=HubConfig)
    # Per-subject rates and open streams (holo.server.ratelimit says where the defaults
    # come from); this node's own buckets, also with nodes sharing a bus.
    rate_limits: RateLimits = field(default_factory=RateLimits)
    grace_s: float = 5.0
    # The web port (holo.server.web): gRPC-Web and Connect for browsers and HoloLens 2, and
    # the web client's files; HOST:PORT, or None for none. Same TLS as the native port.
    web: str | None = None
    web_origins: tuple[str, ...] = ()  # other origins whose pages may call (CORS)
    web_root: Path | None = None  # the built web client; default holo/web/dist
    # The DICOM port (holo.server.dicom_port): a C-STORE SCP on HOST:PORT, or None for none.
    dicom_listen: str | None = None
    dicom_ae_title: str = "HOLO"  # holo's AE title: senders must call it by this
    dicom_allow: tuple[str, ...] = ()  # calling AE titles accepted (at least one)
    # The case received studies join. A PACS sends no case, so they wait in one a
    # radiologist watches ("inbox": a token for it lists them) and are triaged from there.
    dicom_case: str = "inbox"
    dicom_convert: tuple[str, ...] = ()  # auto-convert rules (holo.pacs.rules)
    dicom_quiet_s: float = DEFAULT_QUIET_S  # holo.pacs.receive says why 10 s
    # Prometheus metrics (holo.metrics) over HTTP on HOST:PORT, or None for none. HTTPS with
    # the native port's certificate when it has one; plain HTTP on loopback addresses only.
    metrics: str | None = None


@dataclass
class RunningServer:
    """A started server: its gRPC server, bound port and parts, for tests and shutdown."""

    server: aio.Server
    port: int
    store: Store
    jobs: JobRunner
    health: health.aio.HealthServicer
    config: ServerConfig
    hub: SessionHub
    bus: Bus
    audit: AuditLog
    video: VideoHub
    recordings: RecordingHub
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    store_watch: asyncio.Task[None] | None = None  # health follows the store (store_health)
    bus_watch: asyncio.Task[None] | None = None  # and the session bus (bus_health)
    heavy: FairPool | None = None
    upload_expiry: asyncio.Task[None] | None = None
    web: WebPort | None = None  # the gRPC-Web / Connect listener, with --web
    pulls: PullRunner | None = None  # studies being pulled from PACS nodes
    dicom: DicomPort | None = None  # the C-STORE SCP, with --dicom-listen
    exporter: Exporter | None = None  # the metrics endpoint, with --metrics
    limiter: RateLimiter | None = None  # per-subject rate limits (holo.server.ratelimit)

    @property
    def web_port(self) -> int:
        """The web listener's port (0 when there is none)."""
        return 0 if self.web is None else self.web.port

    @property
    def dicom_port(self) -> int:
        """The DICOM port (0 when there is none)."""
        return 0 if self.dicom is None else self.dicom.port

    @property
    def metrics_port(self) -> int:
        """The metrics endpoint's port (0 when there is none)."""
        return 0 if self.exporter is None else self.exporter.port

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop: refuse new calls, let running ones finish within ``grace`` s.

        Jobs stop first, so their watchers still get the final state ("the server
        stopped") and their streams end before the server does. Session streams never
        finish by themselves: they end with the grace period, and their clients reconnect
        (to this node when it is back, or to another).
        """
        for task in (self.store_watch, self.bus_watch, self.upload_expiry):
            if task is not None:
                task.cancel()
        await self.health.enter_graceful_shutdown()
        # Every step runs even if one before it failed (a full disk can fail a recording's
        # last write): the store is closed and released whatever happened, in one line each.
        for step, close in (
            ("pulls", self._close_pulls),  # before the jobs: a pull may queue one
            # Received studies are stored (and their jobs queued) before the jobs stop.
            ("DICOM port", self._stop_dicom),
            ("jobs", self.jobs.close),
            ("recordings", self.recordings.close),  # recordings finished, replays closed
            ("video", self.video.close),  # sources closed
            ("sessions", self.hub.close),
            ("calls", lambda: self._stop_calls(self.config.grace_s if grace is None else grace)),
            ("bus", self.bus.close),
            ("indexing", self._close_indexing),
            ("audit log", lambda: asyncio.to_thread(self.audit.close)),
            ("store", lambda: asyncio.to_thread(self.store.close)),
            ("metrics endpoint", self._stop_exporter),
        ):
            try:
                await close()
            except Exception as err:
                logger.error("stopping the %s failed: %s", step, err)
        self.stopped.set()

    async def _stop_calls(self, grace: float) -> None:
        """Both ports at once: each lets its calls finish within the same ``grace``."""
        stops = [self.server.stop(grace)]
        if self.web is not None:
            stops.append(self.web.stop(grace))
        await asyncio.gather(*stops)

    async def _close_pulls(self) -> None:
        if self.pulls is not None:
            await self.pulls.close()

    async def _stop_dicom(self) -> None:
        if self.dicom is not None:
            await self.dicom.stop()

    async def _stop_exporter(self) -> None:
        if self.exporter is not None:
            await asyncio.to_thread(self.exporter.stop)

    async def _close_indexing(self) -> None:
        if self.heavy is not None:
            self.heavy.close()


async def open_bus(url: str) -> Bus:
    """The session bus ``holo serve --bus`` names: ``memory`` or ``redis://...``.

    A Redis that does not answer yet does not stop the server: it starts with the
    services that need the bus NOT_SERVING (:mod:`holo.server.bus_health`), and they
    serve once Redis does. A malformed URL is refused.
    """
    if url == "memory":
        return MemoryBus()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from holo.session.redis_bus import RedisBus

        return RedisBus(url)
    raise InvalidRequestError(f"--bus {url!r} is not 'memory' or a redis:// URL")


def is_loopback(host: str) -> bool:
    """True when ``host`` names only this machine (127.0.0.0/8, ::1, localhost)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None)
            )
        except OSError:
            return False


def _split_listen(listen: str, flag: str = "--listen") -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise InvalidRequestError(
            f"{flag} {listen!r} is not HOST:PORT; write e.g. 127.0.0.1:50051 or [::]:443"
        )
    return host, int(port)


def _listen_error(listen: str, detail: str = "", flag: str = "--listen") -> InvalidRequestError:
    return InvalidRequestError(
        f"cannot listen on {listen}: the address is in use or not available"
        + (f" ({detail})" if detail else "")
        + f"; stop what holds it or choose another {flag}"
    )


def _check_free(listen: str, flag: str = "--listen") -> None:
    """Bind the address once, the way gRPC will, to report a clash in one line (gRPC would
    log it to stderr, then raise a bare RuntimeError). A free port (0) needs no check."""
    host, port = _split_listen(listen, flag)
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as err:
        raise _listen_error(listen, str(err), flag) from err
    failures: list[OSError] = []
    for family, kind, proto, _, address in addresses:
        try:
            with socket.socket(family, kind, proto) as probe:
                # As gRPC does: SO_REUSEADDR (a port in TIME_WAIT is free), no SO_REUSEPORT.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise _listen_error(listen, err.strerror or str(err), flag) from err
            failures.append(err)
    # gRPC listens if any resolved address binds (e.g. localhost without IPv6).
    if failures and len(failures) == len(addresses):
        raise _listen_error(listen, failures[0].strerror or str(failures[0]), flag) from failures[0]


def _credentials(config: ServerConfig, listen: str | None = None) -> grpc.ServerCredentials | None:
    """The native port's TLS credentials; also checks that ``listen`` (default the native
    port's address) may serve plain text when no certificate is given."""
    host, _ = _split_listen(listen or config.listen)
    if config.tls_cert is None and config.tls_key is None:
        if not config.insecure:
            raise InvalidRequestError(
                "no TLS certificate given: pass --tls-cert and --tls-key, or --insecure to "
                "serve plain text on a loopback address (development only)"
            )
        if not is_loopback(host):
            raise InvalidRequestError(
                f"plain text is refused on {host}, which is not a loopback address: pass "
                "--tls-cert and --tls-key (patient data never crosses a network unencrypted)"
            )
        return None
    if config.tls_cert is None or config.tls_key is None:
        raise InvalidRequestError("TLS needs both --tls-cert and --tls-key")
    try:
        pair = (config.tls_key.read_bytes(), config.tls_cert.read_bytes())
        client_ca = config.tls_client_ca.read_bytes() if config.tls_client_ca else None
    except OSError as err:
        raise InvalidRequestError(f"cannot read a TLS file: {err}") from err
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


async def start_server(config: ServerConfig) -> RunningServer:
    """Build and start the server; returns once it listens (port 0 picks a free port).

    Raises
    ------
    InvalidRequestError
        A bad ``listen`` or TLS setting, or an address that is in use or not available.
    """
    # Reading the TLS files and resolving names may block: off the event loop.
    credentials = await asyncio.to_thread(_credentials, config)
    await asyncio.to_thread(_check_free, config.listen)
    if config.web is not None:
        web_host, web_port = _split_listen(config.web)
        if web_port != 0 and (web_host, web_port) == _split_listen(config.listen):
            raise InvalidRequestError(
                f"--web {config.web} is the native port's address; give it a port of its own"
            )
        await asyncio.to_thread(_credentials, config, config.web)  # plain text: loopback only
        await asyncio.to_thread(_check_free, config.web, "--web")
    metrics_tls = None
    if config.metrics is not None:  # plain HTTP: loopback only
        metrics_tls = await asyncio.to_thread(_metrics_tls, config)
    dicom_config = await asyncio.to_thread(_dicom_config, config)
    async with AsyncExitStack() as undo:  # on a failure, close what was already opened
        store = await asyncio.to_thread(
            Store,
            config.data,
            catalog=config.store,
            blobs=config.blobs,
            s3_endpoint=config.s3_endpoint,
            s3_ca=config.s3_ca,
            max_upload_bytes=config.max_upload_bytes,
            min_free=config.min_free,
        )
        undo.callback(store.close)
        bus = await open_bus(config.bus)
        undo.push_async_callback(bus.close)
        # Uploads abandoned while the server was down go before it serves.
        await asyncio.to_thread(store.expire_uploads, config.upload_max_age_s)
        if store.shared and config.bus == "memory":
            logger.warning(
                "the store is shared with other nodes but the session bus is this node's "
                "memory: sessions will not reach participants on other nodes (give --bus "
                "redis://...)"
            )
        if not store.shared:
            # One node: a job queued or running now was this node's, and it stopped. Nodes
            # sharing the store take over each other's jobs by their leases instead.
            interrupted = await asyncio.to_thread(store.fail_interrupted_jobs)
            if interrupted:
                logger.warning(
                    "%d job(s) interrupted by the last stop marked failed", len(interrupted)
                )
        # The de-identification key first: a data folder with only a secret (made by an
        # older holo) keeps the key derived from it (holo.auth.load_deid_salt).
        salt = await asyncio.to_thread(load_deid_salt, config.data, secret=config.secret_file)
        secret = await asyncio.to_thread(load_secret, config.data, path=config.secret_file)
        revoked = RevocationList(revocation_path(config.data, secret=config.secret_file))
        authenticate = AuthInterceptor(secret, max_ttl_s=config.max_token_ttl_s, revoked=revoked)
        limiter = RateLimiter(config.rate_limits)
        # The first is outermost: the call counter sees the status code the others set;
        # the rate limits count only callers whose token was checked.
        interceptors = [
            MetricsInterceptor(),
            ErrorInterceptor(config.data),
            authenticate,
            RateLimitInterceptor(limiter),
        ]
        server = aio.server(
            interceptors=interceptors,
            options=[
                # Bigger messages are refused by gRPC itself (RESOURCE_EXHAUSTED).
                ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
                ("grpc.so_reuseport", 0),  # a port clash fails loudly (STYLE.md)
                # Clients ping every 20 s (holo.client) to find a dead link on streams
                # that are quiet for minutes (a long conversion's WatchJob, a session with
                # nothing happening); allow pings 10 s apart. gRPC's default (5 min, 2
                # strikes) closed such a stream with GOAWAY "too_many_pings" after ~60 s.
                # (This is the name of GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS;
                # gRPC ignores names it does not know.)
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ],
        )
        audit = await asyncio.to_thread(
            AuditLog, store.audit_table() or Path(config.data) / "audit.jsonl"
        )
        undo.callback(audit.close)
        zip_limits = ZipLimits(max_total_bytes=config.max_unzipped_bytes)
        jobs = JobRunner(
            store,
            workers=config.workers,
            deid_salt=salt,
            audit=audit,
            zip_limits=zip_limits,
            node=config.node,
            lease_s=config.job_lease_s,
        )
        undo.push_async_callback(jobs.close)
        data = Path(config.data)
        # Ended sessions' logs are archived here when evicted (holo.session.archive).
        hub = SessionHub(bus, config=config.session, audit=audit, archive=data / "sessions")
        video = VideoHub(hub, media_dir=config.media or data / "media")
        undo.push_async_callback(video.close)
        recordings = RecordingHub(
            hub, video, recordings_dir=config.recordings or data / "recordings", audit=audit
        )
        undo.push_async_callback(recordings.close)
        access = SessionAccess(hub, recordings)
        heavy = FairPool(config.index_workers, name="holo-index")
        undo.callback(heavy.close)

        async def convert(**job: str) -> str:
            return (await jobs.start(**job)).job_id

        pacs_nodes = PacsNodes(data)
        pulls = PullRunner(
            store,
            pacs_nodes,
            data / "pacs-pulls",
            salt=salt,
            convert=convert,
            audit=audit,
            run_heavy=heavy.run,
            zip_limits=zip_limits,
            calling_ae=config.dicom_ae_title,
            max_age_s=config.upload_max_age_s,
        )
        undo.push_async_callback(pulls.close)
        await pulls.expire()  # pulls nobody resumed while the server was down
        # Each servicer once, for both ports (holo.server.handlers).
        table = HandlerTable(server, interceptors)
        asset_pb2_grpc.add_UploadServiceServicer_to_server(
            UploadServicer(store, salt, heavy, zip_limits), table
        )
        asset_pb2_grpc.add_ConversionServiceServicer_to_server(
            ConversionServicer(store, jobs), table
        )
        asset_pb2_grpc.add_AssetServiceServicer_to_server(
            AssetServicer(store, chunk_bytes=config.model_chunk_bytes), table
        )
        add_session_servicer(SessionServicer(hub, store, access), table)
        clock_pb2_grpc.add_ClockServiceServicer_to_server(ClockServicer(access), table)
        add_video_servicer(VideoServicer(access, video, recordings), table)
        pacs_pb2_grpc.add_PacsServiceServicer_to_server(
            PacsServicer(
                store,
                pacs_nodes,
                pulls,
                heavy=heavy,
                audit=audit,
                calling_ae=config.dicom_ae_title,
            ),
            table,
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        try:
            if credentials is None:
                port = server.add_insecure_port(config.listen)
            else:
                port = server.add_secure_port(config.listen, credentials)
        except RuntimeError as err:  # this grpcio raises (it never returns 0) on a clash
            raise _listen_error(config.listen) from err
        if port == 0:  # older grpcio
            raise _listen_error(config.listen)
        await server.start()
        undo.push_async_callback(server.stop, 0)
        web = await _start_web(config, table) if config.web is not None else None
        dicom = None
        if dicom_config is not None:
            dicom = DicomPort(
                dicom_config,
                store=store,
                jobs=jobs,
                audit=audit,
                heavy=heavy,
                salt=salt,
                zip_limits=zip_limits,
            )
            await _start_dicom(dicom, config)
            undo.push_async_callback(dicom.stop)
        exporter = None
        if config.metrics is not None:
            exporter = await _start_exporter(config, metrics_tls, hub, video, jobs, store)
            undo.callback(exporter.stop)
        jobs.run()  # jobs other nodes queued, or queued while no node had a worker
        upload_expiry = asyncio.create_task(
            expire_uploads(store, config.upload_max_age_s), name="upload expiry"
        )
        for name in (*SERVICE_NAMES, ""):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        board = HealthBoard(health_servicer)
        # A Redis not answering at start: NOT_SERVING from the first health check on.
        if down := await bus.unavailable():
            logger.warning(
                "%s: starting with sessions, video and the clock NOT_SERVING until it does", down
            )
            await board.report("bus", BUS_SERVICES)
        undo.pop_all()
    running = RunningServer(
        server,
        port,
        store,
        jobs,
        health_servicer,
        config,
        hub,
        bus,
        audit,
        video,
        recordings,
        heavy=heavy,
        upload_expiry=upload_expiry,
        web=web,
        pulls=pulls,
        dicom=dicom,
        exporter=exporter,
        limiter=limiter,
    )
    running.store_watch = asyncio.create_task(watch_store(store, board), name="store health")
    running.bus_watch = asyncio.create_task(watch_bus(bus, board), name="bus health")
    return running


async def _start_web(config: ServerConfig, table: HandlerTable) -> WebPort:
    assert config.web is not None
    host, port = _split_listen(config.web)
    root = config.web_root or default_web_root()
    if not (root / "index.html").is_file():
        logger.warning("the web client is not built (%s): the web port serves RPCs only", root)
    app = web_app(
        table,
        SERVICES,
        root=root,
        origins=config.web_origins,
        tls=config.tls_cert is not None,
        read_max_bytes=MAX_RECEIVE_BYTES,
    )
    try:
        return await start_web(
            app,
            host,
            port,
            tls_cert=config.tls_cert,
            tls_key=config.tls_key,
            tls_client_ca=config.tls_client_ca,
            grace_s=config.grace_s,
        )
    except OSError as err:
        raise _listen_error(config.web, err.strerror or str(err), "--web") from err


def _metrics_tls(config: ServerConfig) -> tuple[str, str, str | None] | None:
    """The metrics endpoint's TLS files (the native port's), or None for plain HTTP, which
    is refused on an address that is not loopback; also checks the address is free."""
    assert config.metrics is not None
    host, port = _split_listen(config.metrics, "--metrics")
    taken = [config.listen, *([config.web] if config.web else [])]
    if port != 0 and (host, port) in [_split_listen(other) for other in taken]:
        raise InvalidRequestError(
            f"--metrics {config.metrics} is another port's address; give it a port of its own"
        )
    _credentials(config, config.metrics)  # the same rule as the native port's plain text
    _check_free(config.metrics, "--metrics")
    if config.tls_cert is None or config.tls_key is None:
        return None
    client_ca = None if config.tls_client_ca is None else str(config.tls_client_ca)
    return str(config.tls_cert), str(config.tls_key), client_ca


async def _start_exporter(
    config: ServerConfig,
    tls: tuple[str, str, str | None] | None,
    hub: SessionHub,
    video: VideoHub,
    jobs: JobRunner,
    store: Store,
) -> Exporter:
    assert config.metrics is not None
    host, port = _split_listen(config.metrics, "--metrics")
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.to_thread(
            lambda: Exporter(
                host, port, loop=loop, hub=hub, video=video, jobs=jobs, store=store, tls=tls
            )
        )
    except OSError as err:
        raise _listen_error(config.metrics, err.strerror or str(err), "--metrics") from err


def _dicom_config(config: ServerConfig) -> DicomPortConfig | None:
    """The DICOM port's settings checked (None without ``--dicom-listen``): a bad one is
    refused in one line before anything starts."""
    if config.dicom_listen is None:
        return None
    _split_listen(config.dicom_listen, "--dicom-listen")
    check_ae_title(config.dicom_ae_title, "--ae-title")
    for title in config.dicom_allow:
        check_ae_title(title, "--dicom-allow")
    if not config.dicom_allow:
        raise InvalidRequestError(
            "--dicom-listen needs at least one --dicom-allow AET: holo takes studies only from "
            "the senders named (give the PACS's or scanner's AE title)"
        )
    check_case_id(config.dicom_case)
    return DicomPortConfig(
        ae_title=config.dicom_ae_title,
        allow=tuple(config.dicom_allow),
        case_id=config.dicom_case,
        rules=parse_rules(config.dicom_convert),
        quiet_s=config.dicom_quiet_s,
    )


async def _start_dicom(dicom: DicomPort, config: ServerConfig) -> None:
    assert config.dicom_listen is not None
    host, port = _split_listen(config.dicom_listen, "--dicom-listen")
    try:
        await dicom.start(host.strip("[]"), port)
    except OSError as err:
        raise _listen_error(
            config.dicom_listen, err.strerror or str(err), "--dicom-listen"
        ) from err


async def serve(
    config: ServerConfig, *, on_ready: Callable[[RunningServer], None] | None = None
) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully; ``on_ready`` once it listens.

    The process is the server's: everything it creates from now on is private to its user
    (umask 077), files made by libraries included (recordings' video, conversion scratch),
    as the data folder's patient data must be (:mod:`holo.store.private`).
    """
    os.umask(0o077)
    install_memtrace(asyncio.get_running_loop())  # HOLO_TRACEMALLOC=DIR only (memtrace)
    running = await start_server(config)
    # Before saying it serves: a SIGTERM sent as soon as it does is a graceful stop too.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    host, _ = _split_listen(config.listen)
    logger.info(
        "serving on %s:%d (%s), data in %s",
        host,
        running.port,
        "plain text" if config.tls_cert is None else "TLS",
        config.data,
    )
    if on_ready is not None:
        on_ready(running)
    # The process is the server's: keep the collector's pauses short (holo.quietgc).
    collector = asyncio.create_task(keep_collections_young(), name="quiet gc")
    await stop.wait()
    collector.cancel()
    logger.info("stopping: finishing calls for up to %.0f s", config.grace_s)
    await running.stop()
