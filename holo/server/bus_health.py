"""Health follows the session bus: NOT_SERVING for SessionService (and the server as a
whole, ``""``) while the bus does not answer (Redis stopped or cut off), SERVING again
once it does.

Sessions live on the bus: while it is down no intent can be appended and no node hears
another (:meth:`holo.session.live.LiveSession.append` answers UNAVAILABLE). What else the
node serves keeps SERVING: video tracks are relayed by this node alone, the clock is its
own, and the store has its own watcher (:mod:`holo.server.store_health`). The in-memory
bus of a single node is never down.
"""

from __future__ import annotations

import asyncio
import logging

from holo import metrics
from holo.server.health_board import HealthBoard
from holo.session import Bus
from holo.v1 import session_pb2

__all__ = ["BUS_SERVICES", "watch_bus"]

logger = logging.getLogger(__name__)

#: The services a bus that does not answer stops.
BUS_SERVICES = frozenset({session_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name, ""})
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
                logger.warning("%s: health says NOT_SERVING for sessions until it does", now)
            else:
                logger.warning("the session bus answers again: SERVING")
            was = now
        metrics.SESSION_BUS_UP.set(0 if now else 1)
        await board.report("bus", BUS_SERVICES if now else frozenset())
        await asyncio.sleep(interval_s)
