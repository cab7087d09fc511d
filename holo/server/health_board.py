"""The health every service reports, from what the watchers say is missing.

Each watcher (the store's disk and engines, :mod:`holo.server.store_health`; the session
bus, :mod:`holo.server.bus_health`) reports the services that cannot work now; a service
is NOT_SERVING while any watcher names it and SERVING again once none does. Two watchers
may name the same service (the whole server, ``""``): one coming back must not declare
it SERVING while the other is still down.
"""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health, health_pb2

__all__ = ["HealthBoard"]


class HealthBoard:
    """Sets the services' health on ``servicer`` from every watcher's latest report."""

    def __init__(self, servicer: health.aio.HealthServicer) -> None:
        self._servicer = servicer
        self._reports: dict[str, frozenset[str]] = {}
        self._down: frozenset[str] = frozenset()
        self._lock = asyncio.Lock()  # one change at a time: the last set is the latest state

    @property
    def down(self) -> frozenset[str]:
        """The services NOT_SERVING now."""
        return self._down

    async def report(self, watcher: str, affected: frozenset[str]) -> None:
        """``watcher`` says the services ``affected`` cannot work now (empty: all can)."""
        async with self._lock:
            self._reports[watcher] = affected
            down = frozenset[str]().union(*self._reports.values())
            for name in sorted(down ^ self._down):
                await self._servicer.set(
                    name,
                    health_pb2.HealthCheckResponse.NOT_SERVING
                    if name in down
                    else health_pb2.HealthCheckResponse.SERVING,
                )
            self._down = down
