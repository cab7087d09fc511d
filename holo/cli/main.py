"""The ``holo`` command line: the parser of every command, and how a command ends.

Errors a user can cause (:class:`~holo.errors.HoloError`, a missing extra included) end
the command with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import holo.cli.igtl
import holo.cli.local
import holo.cli.pacs
import holo.cli.remote
import holo.cli.serve
from holo import __version__
from holo.errors import HoloError

logger = logging.getLogger("holo")

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    """Every ``holo`` command: local (studies, read, convert, segment), client (token,
    upload, jobs, models, fetch, simulate), server (serve, replay), PACS (pacs) and
    navigation (igtl)."""
    parser = argparse.ArgumentParser(
        prog="holo",
        description="Holographic imaging overlay service for mixed-reality orthopaedic surgery.",
    )
    parser.add_argument("--version", action="version", version=f"holo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    for commands in (holo.cli.local, holo.cli.remote, holo.cli.serve, holo.cli.pacs, holo.cli.igtl):
        commands.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``holo`` command; its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="holo: %(levelname)s: %(message)s",
    )
    # pydicom logs every decoder plugin it tries, with tracebacks; holo reports the outcome.
    logging.getLogger("pydicom").setLevel(logging.CRITICAL if not args.verbose else logging.INFO)
    # pynetdicom logs every PDU at INFO and a dropped peer with a traceback; holo reports
    # the outcome in one line.
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL if not args.verbose else logging.INFO)
    try:
        result: int = args.func(args)
    except HoloError as err:
        print(f"holo: error: {err.message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # `holo ... | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    return result
