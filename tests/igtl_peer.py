"""The reference OpenIGTLink peer the gateway tests talk to: ``tests/igtl_client/client.cxx``
built against Debian's ``libopenigtlink-dev`` (OpenIGTLink 1.11, protocol 2) and run as a
subprocess that prints every message it receives as a JSON line and sends the
TRANSFORM / POSITION messages it is told to on stdin.

A missing library or compiler fails the test in CI (``CI=true``) and skips it elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engines import missing

__all__ = ["IgtlPeer", "build_client"]

SOURCE = Path(__file__).resolve().parent / "igtl_client" / "client.cxx"
INCLUDE = Path("/usr/include/openigtlink")  # where `dpkg -L libopenigtlink-dev` puts them


def build_client(folder: Path) -> Path:
    """Compile the client into ``folder``; its path."""
    compiler = shutil.which("g++")
    if compiler is None:
        missing("g++ not found: install it (apt-get install g++) to build the OpenIGTLink peer")
    if not (INCLUDE / "igtlPolyDataMessage.h").is_file():
        missing(
            "the OpenIGTLink reference library is not installed: "
            "apt-get install libopenigtlink-dev (or make setup)"
        )
    binary = folder / "igtl_client"
    command = [compiler, "-std=c++14", "-O1", f"-I{INCLUDE}", str(SOURCE)]
    command += ["-lOpenIGTLink", "-pthread", "-o", str(binary)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"building the OpenIGTLink peer failed:\n{done.stderr}"
    return binary


class IgtlPeer:
    """The client, connected to ``port``; ``received`` holds every message it printed."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.received: list[dict[str, Any]] = []
        self._seen = 0

    @classmethod
    async def connect(cls, binary: Path, port: int) -> IgtlPeer:
        process = await asyncio.create_subprocess_exec(
            str(binary),
            "127.0.0.1",
            str(port),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=256 << 20,  # a full-detail POLYDATA is one long JSON line
        )
        peer = cls(process)
        await peer.next(lambda m: m.get("event") == "connected")
        return peer

    async def _line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise EOFError("the OpenIGTLink peer exited")
        message: dict[str, Any] = json.loads(line)
        self.received.append(message)
        return message

    async def next(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0
    ) -> dict[str, Any]:
        """The first message from now on (or received but not yet taken) that matches."""

        async def find() -> dict[str, Any]:
            while True:
                if self._seen < len(self.received):
                    message = self.received[self._seen]
                    self._seen += 1
                else:
                    message = await self._line()
                    self._seen = len(self.received)
                if predicate(message):
                    return message

        return await asyncio.wait_for(find(), timeout)

    async def message(self, kind: str, name: str, timeout: float = 20.0) -> dict[str, Any]:
        return await self.next(lambda m: m.get("type") == kind and m.get("name") == name, timeout)

    async def command(self, *words: object) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((" ".join(str(w) for w in words) + "\n").encode())
        await self.process.stdin.drain()
        await self.next(lambda m: m.get("event") == "sent")

    async def send_transform(self, name: str, matrix: Sequence[Sequence[float]]) -> None:
        """Send a 4x4 (its top three rows) as TRANSFORM ``name``."""
        await self.command("transform", name, *(v for row in matrix[:3] for v in row[:4]))

    async def send_position(
        self, name: str, position: Sequence[float], quaternion_xyzw: Sequence[float]
    ) -> None:
        await self.command("position", name, *position, *quaternion_xyzw)

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
