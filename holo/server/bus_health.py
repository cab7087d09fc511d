"""Health follows the session bus: NOT_SERVING for the services that need it while it does
not answer (Redis restarted, not started yet, cut off), SERVING again once it does.

Sessions, video (a track belongs to a session) and the session clock need the bus; they
go NOT_SERVING, and their calls answer UNAVAILABLE in one line meanwhile
(:class:`holo.errors.UnavailableError`). The server as a whole (``""``) stays SERVING,
as uploads, conversions and models do: they do not need the bus, the same way sessions
stay SERVING while the store's disk is full (:mod:`holo.server.store_health`). A node
started while Redis is down starts this way and recovers the same way.
"""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health, health_pb2

from holo.session.bus import Bus
from holo.v1 import clock_pb2, session_pb2, video_pb2

__all__ = ["BUS_SERVICES", "bus_down", "watch_bus"]

logger = logging.getLogger(__name__)

#: As often as the store is asked (holo.server.store_health says why 2 s).
CHECK_INTERVAL_S = 2.0
#: A PING on a LAN takes a millisecond; a Redis cut off by the network may never answer.
PING_TIMEOUT_S = 5.0

#: The services that need the bus.
BUS_SERVICES = frozenset(
    pb.DESCRIPTOR.services_by_name[name].full_name
    for pb, name in (
        (session_pb2, "SessionService"),
        (clock_pb2, "ClockService"),
        (video_pb2, "VideoService"),
    )
)


async def bus_down(bus: Bus) -> str:
    """Why the bus cannot serve now (one line), or ``""``; bounded by :data:`PING_TIMEOUT_S`."""
    try:
        return await asyncio.wait_for(bus.down(), PING_TIMEOUT_S)
    except TimeoutError:
        return f"the session bus did not answer within {PING_TIMEOUT_S:.0f} s"


async def watch_bus(
    bus: Bus,
    servicer: health.aio.HealthServicer,
    *,
    down: str = "",
    interval_s: float = CHECK_INTERVAL_S,
) -> None:
    """Set the health of :data:`BUS_SERVICES` every ``interval_s`` seconds until cancelled,
    starting from ``down`` (what :func:`bus_down` said at start); each change logged once."""
    while True:
        await asyncio.sleep(interval_s)
        now = await bus_down(bus)
        if bool(now) == bool(down):
            down = now
            continue
        if now:
            logger.warning("%s: sessions, video and the clock say NOT_SERVING until it does", now)
        else:
            logger.warning("the session bus answers again: sessions, video and the clock SERVING")
        status = (
            health_pb2.HealthCheckResponse.NOT_SERVING
            if now
            else (health_pb2.HealthCheckResponse.SERVING)
        )
        for name in sorted(BUS_SERVICES):
            await servicer.set(name, status)
        down = now
