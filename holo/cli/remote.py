"""The client commands of ``holo``: ``token``, ``upload``, ``jobs``, ``models``, ``fetch``
and ``simulate`` (all through :mod:`holo.client`; the lean install has them).

Client commands take ``--server HOST:PORT``, ``--token`` (default ``HOLO_TOKEN``) and
``--ca`` (PEM of the server's CA; ``--insecure`` for a loopback development server), show
progress bars on a terminal, and print one JSON object with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

from holo.auth import (
    ROLES,
    load_secret,
    mint_token,
    parse_ttl,
    revocation_path,
    revoke_token,
    token_id,
)
from holo.cli.output import ByteBar, StageBars, table
from holo.client import HoloClient
from holo.errors import InvalidRequestError
from holo.wire.asset import JOB_STATE_NAMES
from holo.wire.common import message_dict
from segmentation.presets import PRESET_NAMES

__all__ = ["add_commands", "client_options", "connect", "connection_options", "follow_job"]


def connect(args: argparse.Namespace) -> HoloClient:
    """The client the connection options of :func:`client_options` name."""
    token = args.token or os.environ.get("HOLO_TOKEN", "")
    if not token:
        raise InvalidRequestError("no token: pass --token or set HOLO_TOKEN (see `holo token`)")
    if (args.client_cert is None) != (args.client_key is None):
        raise InvalidRequestError("mutual TLS needs both --client-cert and --client-key")
    pair = None if args.client_cert is None else (args.client_cert, args.client_key)
    return HoloClient(
        args.server, token=token, ca=args.ca, insecure=args.insecure, client_cert=pair
    )


def _cmd_token(args: argparse.Namespace) -> int:
    if args.data is None and args.secret is None:
        raise InvalidRequestError("pass the server's --data folder or its --secret file")
    if args.revoke is not None:
        # A whole token or its id; the server reads the list again at its next call.
        ident = token_id(args.revoke) if args.revoke.startswith("holo1.") else args.revoke
        path = revocation_path(args.data, secret=args.secret)
        revoke_token(path, ident)
        print(json.dumps({"revoked": ident}) if args.json else f"revoked token {ident}")
        return 0
    if args.role is None or args.case is None:
        raise InvalidRequestError("pass --role and --case to mint a token (or --revoke ID)")
    token = mint_token(
        load_secret(args.data, path=args.secret),
        role=args.role,
        case_id=args.case,
        subject=args.subject,
        ttl_s=parse_ttl(args.ttl),
        max_ttl_s=parse_ttl(args.max_token_lifetime),
    )
    ident = token_id(token)
    # The token rides in the fragment: browsers never send it to a server, so no access
    # log or proxy sees it; the page reads it and takes it out of the address bar.
    link = None if args.link is None else f"{_web_base(args.link)}#token={token}"
    if args.json:
        out = {"token": token, "id": ident, "role": args.role, "case": args.case}
        if link is not None:
            out["link"] = link
        print(json.dumps(out))
    else:
        print(link or token)
    return 0


def _web_base(url: str) -> str:
    """The web port's address as a page URL: scheme, host, port and a trailing slash."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("http", "https") or not sep or not rest or "#" in rest or "?" in rest:
        raise InvalidRequestError(
            f"--link {url!r} is not the web port's address; write it as "
            "https://HOST:PORT/ (what `holo serve --web` prints)"
        )
    return f"{scheme}://{rest.rstrip('/')}/"


def _cmd_upload(args: argparse.Namespace) -> int:
    with connect(args) as client:
        bar = ByteBar(not args.json, "upload")
        try:
            study = client.upload_study(args.inputs, case_id=args.case or "", progress=bar)
        finally:
            bar.close()
        out: dict[str, Any] = {"study": message_dict(study)}
        if args.convert:
            job = client.start_conversion(study.study_id.value, preset=args.preset)
            final = follow_job(client, job.job_id.value, show=not args.json)
            out["job"] = message_dict(final)
    if args.json:
        print(json.dumps(out))
        return 0
    s = out["study"]
    print(
        f"study {s['study_id']['value']}: {len(s.get('series', []))} series, "
        f"{s.get('size_bytes', 0)} bytes"
    )
    if "job" in out:
        job = out["job"]
        print(f"job {job['job_id']['value']}: {job.get('state')} {job.get('message', '')}")
    return 0


def follow_job(client: Any, job_id: str, *, show: bool) -> Any:
    """Watch a job to its end, with a bar per stage on a terminal; the final state."""
    bars = StageBars(enabled=show)

    def update(job: Any) -> None:
        if job.stage:
            bars(job.stage, job.fraction)

    try:
        return client.wait_job(job_id, on_update=update)
    finally:
        bars.close()


def _cmd_jobs(args: argparse.Namespace) -> int:
    with connect(args) as client:
        if args.start:
            job = client.start_conversion(args.start, preset=args.preset)
            jobs = [follow_job(client, job.job_id.value, show=not args.json) if args.watch else job]
        elif args.watch_job:
            jobs = [follow_job(client, args.watch_job, show=not args.json)]
        elif args.cancel:
            jobs = [client.cancel_job(args.cancel)]
        else:
            jobs = client.list_jobs()
    if args.json:
        print(json.dumps({"jobs": [message_dict(j) for j in jobs]}))
        return 0
    rows = [
        [
            j.job_id.value,
            j.study_id.value,
            j.preset,
            JOB_STATE_NAMES.get(j.state, "?"),
            j.model_id.value,
            j.message[:60],
        ]
        for j in jobs
    ]
    print(table(rows, ["job", "study", "preset", "state", "model", "message"]))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    with connect(args) as client:
        models = client.list_models()
    if args.json:
        print(json.dumps({"models": [message_dict(m) for m in models]}))
        return 0
    rows = [
        [
            m.model_id.value,
            m.preset,
            str(len(m.structures)),
            " / ".join(str(lod.triangles) for lod in m.lods),
            str(m.size_bytes),
        ]
        for m in models
    ]
    print(table(rows, ["model", "preset", "structures", "triangles per LOD", "bytes"]))
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    with connect(args) as client:
        bar = ByteBar(not args.json, "fetch")
        try:
            result = client.fetch_model(args.model, args.output, progress=bar)
        finally:
            bar.close()
    summary = {
        "model_id": args.model,
        "output": str(args.output),
        "sha256": result.manifest.sha256,
        "bytes": result.manifest.size_bytes,
        "bytes_received": result.bytes_received,
        "cached": result.cached,
        "seconds_to_manifest": round(result.seconds_to_manifest, 4),
        "seconds_to_first_lod": round(result.seconds_to_first_lod, 4),
        "seconds_total": round(result.seconds_total, 4),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        state = "already current" if result.cached else f"{result.bytes_received} bytes"
        print(
            f"wrote {args.output} ({state}); manifest {summary['seconds_to_manifest']:.3f} s, "
            f"first LOD {summary['seconds_to_first_lod']:.3f} s, "
            f"all {summary['seconds_total']:.3f} s"
        )
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from holo.testing.simulate import SimulationConfig, simulate

    if args.data is not None or args.secret is not None:
        secret = load_secret(args.data, path=args.secret)
        tokens = {
            role: mint_token(
                secret, role=role, case_id=args.case, subject=f"sim-{role}", ttl_s=86400
            )
            for role in ("presenter", "expert", "observer")
        }
    else:
        token = args.token or os.environ.get("HOLO_TOKEN", "")
        if not token:
            raise InvalidRequestError(
                "pass --data or --secret (the server's, to mint tokens) or --token"
            )
        tokens = dict.fromkeys(("presenter", "expert", "observer"), token)
    config = SimulationConfig(
        servers=[s for part in args.server for s in part.split(",") if s],
        tokens=tokens,
        experts=args.experts,
        observers=args.observers,
        rate_hz=args.rate,
        seconds=args.seconds,
        model_id=args.model or "",
        ca=args.ca.read_bytes() if args.ca else None,
        insecure=args.insecure,
        server_pids=args.server_pid or [],
    )
    if args.observers_per_process is not None:
        if args.observers_per_process < 1:
            raise InvalidRequestError("--observers-per-process must be at least 1")
        config.observers_per_process = args.observers_per_process
    report = asyncio.run(simulate(config))
    if args.json:
        print(json.dumps(report))
        return 0
    rows = [
        [
            role,
            str(r["clients"]),
            str(r["events"]),
            " / ".join(f"{v:.1f}" for v in r["event_latency_ms"].values()),
            str(r["ephemeral"]),
            " / ".join(f"{v:.1f}" for v in r["ephemeral_latency_ms"].values()),
        ]
        for role, r in report["roles"].items()
    ]
    print(
        table(
            rows,
            ["role", "clients", "events", "p50/p90/p99 ms", "ephemeral", "p50/p90/p99 ms"],
        )
    )
    print(
        f"\nfinal seq {report['final_seq']}; events lost {report['events_lost']}, repeated "
        f"{report['events_repeated']}; resyncs {report['resyncs']}; reconnects "
        f"{report['reconnects']}; joins took {report['join_seconds']} s"
    )
    if "server" in report:
        print("server: " + ", ".join(f"{k} {v}" for k, v in report["server"].items()))
    return 0


def client_options(p: argparse.ArgumentParser) -> None:
    """The options every client command takes: server, token, TLS, --json."""
    connection_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def connection_options(p: argparse.ArgumentParser) -> None:
    """Where the server is and how to reach it: server, token, TLS."""
    p.add_argument(
        "--server",
        default=os.environ.get("HOLO_SERVER", "127.0.0.1:50051"),
        help="HOST:PORT (default $HOLO_SERVER or 127.0.0.1:50051)",
    )
    p.add_argument("--token", help="access token (default $HOLO_TOKEN); see `holo token`")
    p.add_argument("--ca", type=Path, help="PEM of the CA that signed the server's certificate")
    p.add_argument("--insecure", action="store_true", help="plain text (loopback dev servers)")
    p.add_argument("--client-cert", type=Path, help="client certificate (PEM), for mutual TLS")
    p.add_argument("--client-key", type=Path, help="its private key (PEM)")


def add_commands(sub: Any) -> None:
    """Register token, upload, jobs, models, simulate and fetch on the ``holo`` parser."""
    p = sub.add_parser("token", help="mint (or revoke) an access token with the server's secret")
    p.add_argument("--data", type=Path, help="the server's --data folder")
    p.add_argument("--secret", type=Path, help="or the server's --secret file")
    p.add_argument("--role", choices=ROLES, help="the role the token is for (to mint one)")
    p.add_argument("--case", help="the case (session) the token is for (to mint one)")
    p.add_argument(
        "--subject",
        default=os.environ.get("USER", "user") or "user",
        help="who the token is for (audit)",
    )
    p.add_argument("--ttl", default="8h", help="lifetime: 90s, 30m, 8h, 2d (default 8h)")
    p.add_argument(
        "--max-token-lifetime",
        default="24h",
        help="refuse a longer --ttl (default 24h; the server has the same setting)",
    )
    p.add_argument(
        "--revoke",
        metavar="ID",
        help="revoke a token instead: its id (`--json` prints it) or the whole token",
    )
    p.add_argument(
        "--link",
        nargs="?",
        const="http://127.0.0.1:8080/",
        metavar="WEB_URL",
        help="print a link that opens the web page with this token (in the URL fragment, "
        "never sent to a server); WEB_URL is the web port, default http://127.0.0.1:8080/",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_token)

    p = sub.add_parser("upload", help="upload a study (zip, folder or DICOM files) to a server")
    p.add_argument("inputs", nargs="+", type=Path, help="a .zip, a folder or DICOM files")
    p.add_argument("--case", help="case id (default: the token's)")
    p.add_argument("--convert", action="store_true", help="then convert it and follow the job")
    p.add_argument("--preset", default="bone", choices=PRESET_NAMES)
    client_options(p)
    p.set_defaults(func=_cmd_upload)

    p = sub.add_parser("jobs", help="list, start, watch or cancel conversion jobs")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--start", metavar="STUDY", help="convert this study")
    group.add_argument("--watch-job", metavar="JOB", help="follow a job until it ends")
    group.add_argument("--cancel", metavar="JOB", help="cancel a job")
    p.add_argument("--watch", action="store_true", help="with --start: follow the job")
    p.add_argument("--preset", default="bone", choices=PRESET_NAMES)
    client_options(p)
    p.set_defaults(func=_cmd_jobs)

    p = sub.add_parser("models", help="list the models of the token's case")
    client_options(p)
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("simulate", help="drive a session with simulated headsets; report latency")
    p.add_argument(
        "--server",
        action="append",
        default=[],
        help="HOST:PORT (repeat, or comma-separate, for several nodes)",
    )
    p.add_argument("--case", required=True, help="the case whose session to open")
    p.add_argument("--data", type=Path, help="the server's --data, to mint the crowd's tokens")
    p.add_argument("--secret", type=Path, help="or the server's --secret file")
    p.add_argument("--token", help="one token for every simulated client (instead of --data)")
    p.add_argument(
        "--presenter", action="store_true", help="a presenter (always: it opens the session)"
    )
    p.add_argument("--experts", type=int, default=2)
    p.add_argument("--observers", type=int, default=100)
    p.add_argument(
        "--observers-per-process",
        type=int,
        help="observers per worker process of the simulator (default 250)",
    )
    p.add_argument("--rate", type=float, default=60.0, help="presenter pose updates per second")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--model", help="a model of the case to load (default: none; poses only)")
    p.add_argument(
        "--server-pid",
        type=int,
        action="append",
        help="measure this server process's CPU and memory",
    )
    p.add_argument("--ca", type=Path, help="PEM of the CA that signed the server's certificate")
    p.add_argument("--insecure", action="store_true", help="plain text (loopback dev servers)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("fetch", help="download a model (coarse LOD first) to a .glb")
    p.add_argument("model", help="model id (see `holo models`)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .glb to write")
    client_options(p)
    p.set_defaults(func=_cmd_fetch)
