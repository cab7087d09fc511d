"""Health follows the session bus: NOT_SERVING for the services that need it, and for the
server as a whole (``""``, as when the store does not answer), while the bus does not
answer (Redis restarted, not started yet, cut off); SERVING again once it does.

Sessions live on the bus, and a video track and the session clock belong to a session:
while it is down their calls answer UNAVAILABLE in one line
(:class:`holo.errors.UnavailableError`). Uploads, conversions and models keep SERVING
(the store has its own watcher, :mod:`holo.server.store_health`). A node started while
Redis is down starts this way and recovers the same way. The in-memory bus of a single
node is never down.
"""

from __future__ import annotations

import asyncio
import logging

from holo import metrics
from holo.server.health_board import HealthBoard
from holo.session import Bus
from holo.v1 import clock_pb2, session_pb2, video_pb2

__all__ = ["BUS_SERVICES", "watch_bus"]

logger = logging.getLogger(__name__)

#: The services a bus that does not answer stops.
BUS_SERVICES = frozenset(
    {
        "",
        *(
            pb.DESCRIPTOR.services_by_name[name].full_name
            for pb, name in (
                (session_pb2, "SessionService"),
                (clock_pb2, "ClockService"),
                (video_pb2, "VideoService"),
            )
        ),
    }
)
#: How often the bus is asked (a PING: well under a millisecond on a LAN); as the store's
#: watcher, well inside the 5-10 s at which load balancers ask for health.
CHECK_INTERVAL_S = 2.0


async def watch_bus(bus: Bus, board: HealthBoard, interval_s: float = CHECK_INTERVAL_S) -> None:
    """Report the bus's state to ``board`` every ``interval_s`` seconds, until cancelled;
    each change is logged once."""
    was = ""
    while True:
        try:
            now = await bus.unavailable()
        except Exception as err:  # a failure of its own: down too
            logger.exception("asking the session bus failed")
            now = f"the session bus cannot be asked ({type(err).__name__})"
        if now != was:
            if now:
                logger.warning(
                    "%s: sessions, video and the clock say NOT_SERVING until it does", now
                )
            else:
                logger.warning("the session bus answers again: SERVING")
            was = now
        metrics.SESSION_BUS_UP.set(0 if now else 1)
        await board.report("bus", BUS_SERVICES if now else frozenset())
        await asyncio.sleep(interval_s)
