"""``holo igtl``: the OpenIGTLink gateway (the ``igtl`` extra).

Joins a session as the token's role and serves it to OpenIGTLink peers (3D Slicer's
OpenIGTLinkIF, trackers) until SIGTERM or SIGINT, then leaves the session. The address it
listens on goes to stderr once it does (``--listen HOST:0`` picks a free port).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from holo.cli.remote import connection_options
from holo.errors import InvalidRequestError

__all__ = ["add_commands"]

_AXES = {
    "+x": (1.0, 0.0, 0.0),
    "-x": (-1.0, 0.0, 0.0),
    "+y": (0.0, 1.0, 0.0),
    "-y": (0.0, -1.0, 0.0),
    "+z": (0.0, 0.0, 1.0),
    "-z": (0.0, 0.0, -1.0),
}


def _cmd_igtl(args: argparse.Namespace) -> int:
    from holo.igtl import GatewayConfig, IgtlGateway, parse_listen  # the igtl extra

    token = args.token or os.environ.get("HOLO_TOKEN", "")
    if not token:
        raise InvalidRequestError("no token: pass --token or set HOLO_TOKEN (see `holo token`)")
    if args.client_cert is not None or args.client_key is not None:
        raise InvalidRequestError(
            "holo igtl does not support mutual TLS yet (the session SDK has no client "
            "certificate); use a server that does not require one"
        )
    host, port = parse_listen(args.listen)
    config = GatewayConfig(
        host=host,
        port=port,
        level=args.lod,
        pointer_device=args.pointer_device,
        pointer_axis=_AXES[args.pointer_axis],
    )
    gateway = IgtlGateway(
        args.server,
        token=token,
        session_id=args.session or "",
        ca=args.ca.read_bytes() if args.ca else None,
        insecure=args.insecure,
        config=config,
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await gateway.start()
            print(
                f"holo igtl: serving OpenIGTLink on {host}:{gateway.port} for session "
                f"{gateway.session_id}",
                file=sys.stderr,
                flush=True,
            )
            await stop.wait()
        finally:
            await gateway.stop()

    asyncio.run(run())
    return 0


def add_commands(sub: Any) -> None:
    """Register ``igtl`` on the ``holo`` parser."""
    p = sub.add_parser(
        "igtl",
        help="serve a session to 3D Slicer and trackers over OpenIGTLink",
        description="Join a session and serve it over OpenIGTLink: models as POLYDATA, "
        "anchors as TRANSFORM, annotations as POINT (RAS mm); tracker TRANSFORM/POSITION "
        "messages become this participant's pointer. OpenIGTLink has no security of its "
        "own: anyone who reaches --listen sees the models and moves the pointer.",
    )
    connection_options(p)
    p.add_argument("--session", help="session id (default: the open session of the token's case)")
    p.add_argument(
        "--listen",
        default="127.0.0.1:18944",
        help="HOST:PORT for OpenIGTLink peers (default 127.0.0.1:18944, loopback only; "
        "give another interface only on a trusted network)",
    )
    p.add_argument(
        "--lod",
        type=int,
        default=-1,
        help="level of detail of the POLYDATA: 0 coarsest ... -1 full detail (default); "
        "`holo models` lists them",
    )
    p.add_argument(
        "--pointer-device",
        metavar="NAME",
        help="only this device's poses move the pointer (default: every device's)",
    )
    p.add_argument(
        "--pointer-axis",
        choices=sorted(_AXES),
        default="-z",
        help="the tool axis the pointer ray follows (default -z)",
    )
    p.set_defaults(func=_cmd_igtl)
