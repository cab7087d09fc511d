"""A TCP proxy that delays each direction by a base plus random jitter, in order.

Stands in for a network with latency and jitter between a client and a real server (the
bytes and the server are real; only the path is slowed). Each chunk read on one side is
written to the other at ``max(previous release, arrival + base + uniform(0, jitter))``, so
order is kept, as on a TCP path.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time


class DelayProxy:
    def __init__(
        self, target_port: int, *, base_s: float, jitter_s: float, seed: int = 20261201
    ) -> None:
        self.target_port = target_port
        self.base_s = base_s
        self.jitter_s = jitter_s
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> DelayProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def release() -> None:
            while True:
                at, chunk = await queue.get()
                if not chunk:
                    break
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                writer.write(chunk)
                await writer.drain()
            with contextlib.suppress(Exception):
                writer.close()

        sender = asyncio.create_task(release())
        last = 0.0
        try:
            while chunk := await reader.read(65536):
                last = max(
                    last, time.monotonic() + self.base_s + self._rng.uniform(0, self.jitter_s)
                )
                queue.put_nowait((last, chunk))
        except (ConnectionError, asyncio.CancelledError):
            pass
        queue.put_nowait((0.0, b""))
        with contextlib.suppress(Exception):
            await sender

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        both = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(both)
        await asyncio.gather(*both, return_exceptions=True)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
