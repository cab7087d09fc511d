"""The server commands of ``holo``: ``serve`` and ``replay`` (the ``server`` extra).

Both run until SIGTERM or SIGINT and stop gracefully; the port they listen on goes to
stderr once they do (``--listen HOST:0`` picks a free one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from holo.auth import parse_ttl
from holo.errors import InvalidRequestError
from holo.recording import START_MODES

__all__ = ["add_commands"]


def _cmd_serve(args: argparse.Namespace) -> int:
    from holo.server import ServerConfig, serve  # the server extra
    from holo.server.logs import use_json
    from holo.server.ratelimit import RateLimits
    from holo.server.session_service import session_config

    if args.log_format == "json":
        use_json()  # every line from here on: one JSON object

    if not args.upload_max_age > 0:
        raise InvalidRequestError(
            f"--upload-max-age {args.upload_max_age}: give the hours an unfinished upload "
            "is kept, more than 0"
        )
    if not args.max_unzipped_gib > 0:
        raise InvalidRequestError(
            f"--max-unzipped-gib {args.max_unzipped_gib}: give the GiB an uploaded zip may "
            "expand to, more than 0"
        )
    if not args.job_lease > 0:
        raise InvalidRequestError(
            f"--job-lease {args.job_lease}: give the seconds a node's claim on a conversion "
            "holds unless renewed, more than 0 (default 30)"
        )
    config = ServerConfig(
        data=args.data,
        listen=args.listen,
        store=args.store,
        blobs=args.blobs,
        s3_endpoint=args.s3_endpoint,
        s3_ca=args.s3_ca,
        node=args.node,
        job_lease_s=args.job_lease,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        insecure=args.insecure,
        workers=args.workers,
        index_workers=args.index_workers,
        upload_max_age_s=args.upload_max_age * 3600.0,
        max_unzipped_bytes=int(args.max_unzipped_gib * (1 << 30)),
        bus=args.bus,
        secret_file=args.secret,
        media=args.media,
        max_token_ttl_s=parse_ttl(args.max_token_lifetime),
        session=session_config(args.session_limit, args.observer_ephemeral_hz),
        rate_limits=RateLimits().replaced(args.rate_limit),
        web=args.web,
        web_origins=tuple(_origin(o) for o in args.web_origin),
        dicom_listen=args.dicom_listen,
        dicom_ae_title=args.ae_title,
        dicom_allow=tuple(args.dicom_allow),
        dicom_case=args.dicom_case,
        dicom_convert=tuple(args.dicom_convert),
        dicom_quiet_s=args.dicom_quiet,
        metrics=args.metrics,
    )
    if args.min_free is not None:
        config.min_free = args.min_free

    def ready(running: Any) -> None:
        host = args.listen.rpartition(":")[0]
        mode = "plain text" if args.tls_cert is None else "TLS"
        where = f"data in {args.data}"
        if running.store.shared:
            where += f", store shared (node {running.jobs.node})"
        print(
            f"holo: serving on {host}:{running.port} ({mode}); {where}",
            file=sys.stderr,
            flush=True,
        )
        if running.web is not None:
            web_host = args.web.rpartition(":")[0]
            scheme = "http" if args.tls_cert is None else "https"
            print(
                f"holo: web page and gRPC-Web on {scheme}://{web_host}:{running.web_port}/ "
                "(open the link `holo token ... --link` prints)",
                file=sys.stderr,
                flush=True,
            )
        if running.dicom is not None:
            dicom_host = args.dicom_listen.rpartition(":")[0]
            print(
                f"holo: DICOM port on {dicom_host}:{running.dicom_port} as {args.ae_title} "
                f"(studies from {', '.join(args.dicom_allow)} into case {args.dicom_case})",
                file=sys.stderr,
                flush=True,
            )
        if running.exporter is not None:
            metrics_host = args.metrics.rpartition(":")[0]
            scheme = "http" if args.tls_cert is None else "https"
            print(
                f"holo: metrics on {scheme}://{metrics_host}:{running.metrics_port}/metrics",
                file=sys.stderr,
                flush=True,
            )

    asyncio.run(serve(config, on_ready=ready))
    return 0


def _origin(text: str) -> str:
    """A --web-origin checked: scheme, host and optional port, nothing else."""
    scheme, sep, rest = text.partition("://")
    if scheme not in ("http", "https") or not sep or not rest or "/" in rest.rstrip("/"):
        raise InvalidRequestError(
            f"--web-origin {text!r} is not an origin; write it as https://HOST[:PORT]"
        )
    return f"{scheme}://{rest.rstrip('/')}"


def _cmd_replay(args: argparse.Namespace) -> int:
    """Serve a recording folder as a read-only session, through the usual services."""
    from holo.recording.files import Recording
    from holo.server import ServerConfig, serve  # the server extra

    recording_dir = args.recording.resolve()
    recording = Recording.open(recording_dir)  # a bad folder: one line before anything listens
    config = ServerConfig(
        data=args.data,
        listen=args.listen,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        insecure=args.insecure,
        secret_file=args.secret,
        recordings=recording_dir.parent,
    )

    def ready(running: Any) -> None:
        async def open_it() -> None:
            # No opener: anyone with a token for the case may seek it.
            replay = await running.recordings.open_replay(
                recording_dir.name, args.speed, case_id=recording.case_id, start=args.start
            )
            report = {
                "listen": f"{args.listen.rpartition(':')[0]}:{running.port}",
                "session_id": replay.session_id,
                "case_id": replay.case_id,
                "recording": str(recording_dir),
                "tracks": [
                    {"track_id": t.track_id, "name": t.name, "kind": t.kind}
                    for t in replay.tracks.values()
                ],
                "started_t_ns": replay.recording.started_t_ns,
                "stopped_t_ns": replay.recording.stopped_t_ns,
                "start": args.start,
            }
            print(json.dumps(report), flush=True)
            print(
                f"holo: replaying {recording_dir.name} as session {replay.session_id} on "
                f"port {running.port}; Join it and WatchVideo its tracks with a token for "
                f"case {replay.case_id!r}",
                file=sys.stderr,
                flush=True,
            )

        def done(task: asyncio.Task[None]) -> None:
            _background.discard(task)
            if not task.cancelled() and task.exception() is not None:
                print(f"holo replay: {task.exception()}", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGTERM)  # nothing to serve: stop

        task = asyncio.get_running_loop().create_task(open_it())
        _background.add(task)
        task.add_done_callback(done)

    asyncio.run(serve(config, on_ready=ready))
    return 0


_background: set[asyncio.Task[None]] = set()  # tasks started from a callback, kept alive


def add_commands(sub: Any) -> None:
    """Register serve and replay on the ``holo`` parser."""
    p = sub.add_parser("serve", help="run the holo gRPC server")
    p.add_argument(
        "--data", type=Path, required=True, help="folder for the store and the token secret"
    )
    p.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT (port 0: any free port)")
    p.add_argument(
        "--store",
        default="",
        metavar="URL",
        help="metadata several nodes share: postgresql://USER@HOST:PORT/DB (needs --blobs); "
        "default: SQLite in the data folder (one node)",
    )
    p.add_argument(
        "--blobs",
        default="",
        metavar="URL",
        help="models and studies in an S3-compatible object store: s3://BUCKET/PREFIX "
        "(endpoint from --s3-endpoint, credentials from AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY); default: DATA/blobs. The data folder keeps a read cache",
    )
    p.add_argument(
        "--s3-endpoint",
        default="",
        metavar="URL",
        help="the object store: https://HOST:PORT (default HOLO_S3_ENDPOINT)",
    )
    p.add_argument(
        "--s3-ca",
        default="",
        metavar="PEM",
        help="the CA that signed the object store's certificate (default HOLO_S3_CA; else "
        "the system's CAs)",
    )
    p.add_argument(
        "--node",
        default="",
        help="this node's name in the conversion jobs it runs (default HOST-PID)",
    )
    p.add_argument(
        "--job-lease",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="with a shared store: a node's claim on a conversion lasts this long unless "
        "renewed, and another node takes the job over this long after its node died "
        "(default 30)",
    )
    p.add_argument("--tls-cert", type=Path, help="server certificate chain (PEM)")
    p.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    p.add_argument(
        "--tls-client-ca",
        type=Path,
        help="require client certificates signed by this CA (mutual TLS)",
    )
    p.add_argument("--insecure", action="store_true", help="plain text; loopback addresses only")
    p.add_argument("--workers", type=int, default=1, help="conversions run at once (default 1)")
    p.add_argument(
        "--index-workers",
        type=int,
        default=2,
        help="uploaded studies indexed at once, callers taking turns (default 2)",
    )
    p.add_argument(
        "--upload-max-age",
        type=float,
        default=24.0,
        metavar="HOURS",
        help="forget unfinished uploads idle this long and delete their data (default 24)",
    )
    p.add_argument(
        "--max-unzipped-gib",
        type=float,
        default=4.0,
        metavar="GIB",
        help="refuse an uploaded zip that expands to more than this (default 4)",
    )
    p.add_argument(
        "--bus",
        default="memory",
        help="session bus: memory (one node, default) or redis://HOST:PORT/DB (several nodes)",
    )
    p.add_argument(
        "--secret",
        type=Path,
        help="token secret file (default DATA/secret.key); nodes sharing a bus share one",
    )
    p.add_argument(
        "--media",
        type=Path,
        help="video files presenters may play into a session (default DATA/media)",
    )
    p.add_argument(
        "--max-token-lifetime",
        default="24h",
        help="refuse tokens minted to live longer: 90s, 30m, 8h, 2d (default 24h)",
    )
    p.add_argument(
        "--min-free",
        metavar="SIZE",
        help="free space new uploads must leave on the data folder's disk, for sessions and "
        "the audit log: 0, a size (512M, 2G) or a share (5%%); default 1G or 5%% of the "
        "disk, whichever is smaller",
    )
    p.add_argument(
        "--session-limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change a bound of session state, e.g. max_annotations=512 (repeatable; names "
        "and defaults: holo.session.limits.SessionLimits); refused when a full session "
        "would no longer fit a client's 4 MiB",
    )
    p.add_argument(
        "--observer-ephemeral-hz",
        type=float,
        default=None,
        metavar="HZ",
        help="how often observers are sent the newest live poses and pointers (default 15: "
        "holo.session.HubConfig.observer_ephemeral_interval_s); their timelines "
        "interpolate between the values they get",
    )
    p.add_argument(
        "--rate-limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change a per-user limit of this node, e.g. intent_per_s=40 or streams=1000 "
        "(repeatable; 0 turns one off; names and defaults: holo.server.ratelimit.RateLimits)",
    )
    p.add_argument(
        "--web",
        metavar="HOST:PORT",
        help="also serve the web page and gRPC-Web/Connect (browsers, HoloLens 2) here; "
        "same TLS as --listen",
    )
    p.add_argument(
        "--web-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a page served elsewhere (https://host:port) may call the web port (CORS; "
        "repeatable); by default only the web port's own page may",
    )
    p.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics (calls, streams, participants, fan-out lag, video, "
        "jobs, store; README 'Metrics and logs') at http://HOST:PORT/metrics: HTTPS with "
        "--tls-cert, plain HTTP on loopback addresses only; off by default",
    )
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: one JSON object per line (time, level, logger, message; request_id "
        "and subject inside a call); default text",
    )
    dicom = p.add_argument_group(
        "DICOM port", "receive studies a PACS or scanner sends (C-STORE SCP; C-ECHO answered)"
    )
    dicom.add_argument(
        "--dicom-listen",
        metavar="HOST:PORT",
        help="listen for DICOM associations here (port 0: any free port; 104 and 11112 are "
        "the usual ones)",
    )
    dicom.add_argument(
        "--ae-title",
        default="HOLO",
        metavar="AET",
        help="holo's AE title: senders must call it by this (default HOLO)",
    )
    dicom.add_argument(
        "--dicom-allow",
        action="append",
        default=[],
        metavar="AET",
        help="a calling AE title that may send (repeatable; at least one): others are rejected",
    )
    dicom.add_argument(
        "--dicom-case",
        default="inbox",
        metavar="CASE",
        help="the case received studies join (default inbox: a radiologist with a token for "
        "it lists them)",
    )
    dicom.add_argument(
        "--dicom-convert",
        action="append",
        default=[],
        metavar="RULE",
        help="convert received series that match: KEY=GLOB[,KEY=GLOB...][:PRESET], keys "
        "modality, body_part, description (case-insensitive globs), preset default bone; "
        "e.g. modality=CT,body_part=KNEE:bone (repeatable)",
    )
    dicom.add_argument(
        "--dicom-quiet",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="a study is complete when its association ends, or this long after its last "
        "instance if the sender keeps the association open (default 10)",
    )
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "replay", help="serve a session recording as a read-only session (video + holograms)"
    )
    p.add_argument("recording", type=Path, help="a recording folder (DATA/recordings/rec-...)")
    p.add_argument(
        "--data", type=Path, required=True, help="folder for the token secret and the store"
    )
    p.add_argument("--listen", default="127.0.0.1:50052", help="HOST:PORT (port 0: any free port)")
    p.add_argument("--tls-cert", type=Path, help="server certificate chain (PEM)")
    p.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    p.add_argument("--insecure", action="store_true", help="plain text; loopback addresses only")
    p.add_argument("--secret", type=Path, help="token secret file (default DATA/secret.key)")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed (default 1)")
    p.add_argument(
        "--start",
        choices=START_MODES,
        default="join",
        help="when the replay clock starts: at the first viewer's join (default; nobody "
        "misses the beginning), now, or paused until a ControlReplay resumes it",
    )
    p.set_defaults(func=_cmd_replay)
