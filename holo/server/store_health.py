"""Health follows the store: NOT_SERVING while the data folder's disk is full or below the
reserve (:mod:`holo.store.space`), or while an engine of a shared store (the PostgreSQL
catalog, the object store; issue 18) does not answer; SERVING again once it is over.

What goes NOT_SERVING is what cannot work then: the server as a whole (``""``, what
monitoring and load balancers ask by default, so an operator hears of it) and the
services that need what is missing. A full disk stops UploadService (new uploads are
refused) and ConversionService (models); an engine that does not answer stops those and
AssetService too (models are listed and found in the catalog). Sessions, video and the
clock keep SERVING: they do not need the store, and a balancer asking for them must not
drop a procedure in progress.
"""

from __future__ import annotations

import asyncio
import logging

from holo.server.health_board import HealthBoard
from holo.store import Store
from holo.v1 import asset_pb2

__all__ = ["CHECK_INTERVAL_S", "watch_store"]

logger = logging.getLogger(__name__)

#: How often the disk and the engines are asked. A statvfs costs microseconds and a
#: ``SELECT 1`` or a bucket check a millisecond on a LAN; 2 s is well inside the 5-10 s
#: at which load balancers and Kubernetes usually ask for health.
CHECK_INTERVAL_S = 2.0
#: How long the engines get to answer a health check: a LAN round trip is a millisecond,
#: and a load balancer asks every 5-10 s.
ENGINE_TIMEOUT_S = 5.0


def _names(*services: str) -> frozenset[str]:
    return frozenset(asset_pb2.DESCRIPTOR.services_by_name[s].full_name for s in services)


#: The services a full disk stops, and those an engine that does not answer stops.
DISK_SERVICES = _names("UploadService", "ConversionService") | {""}
ENGINE_SERVICES = _names("UploadService", "ConversionService", "AssetService") | {""}


async def watch_store(
    store: Store, board: HealthBoard, interval_s: float = CHECK_INTERVAL_S
) -> None:
    """Report the health of the services the store serves to ``board``, every
    ``interval_s`` seconds, until cancelled; each change of the disk or an engine is
    logged once."""
    low, down = False, list[str]()
    asking: asyncio.Future[list[str]] | None = None
    while True:
        try:
            # Off the loop: statvfs of a stalled network volume can block.
            now_low = await asyncio.to_thread(store.space.low)
            free = await asyncio.to_thread(store.space.free_bytes)
        except OSError as err:
            logger.warning("cannot read the free space of the data folder: %s", err)
            now_low, free = low, 0
        try:
            # Bounded: an engine cut off by the network may not answer at all, and that is
            # down too. Its own timeouts end the call later; until then no second check is
            # started, so checks never pile up on threads the RPCs need.
            if asking is None or asking.done():
                asking = asyncio.ensure_future(asyncio.to_thread(store.engines_down))
            now_down = await asyncio.wait_for(asyncio.shield(asking), ENGINE_TIMEOUT_S)
        except TimeoutError:
            now_down = [f"the store's engines did not answer within {ENGINE_TIMEOUT_S:.0f} s"]
        except Exception as err:  # an engine failing in a way of its own: still down
            logger.exception("asking the store's engines failed")
            now_down = [f"the store's engines cannot be asked ({type(err).__name__})"]
        if now_low != low:
            low = now_low
            if low:
                logger.warning(
                    "the disk of data folder %r is full: %d MiB free, %d MiB reserved; new "
                    "uploads are refused and health says NOT_SERVING until space is freed",
                    store.space.name,
                    free >> 20,
                    store.space.reserve_bytes >> 20,
                )
            else:
                logger.warning(
                    "the disk of data folder %r has room again (%d MiB free): SERVING",
                    store.space.name,
                    free >> 20,
                )
        if now_down != down:
            for line in now_down:
                if line not in down:
                    logger.warning("%s: health says NOT_SERVING until it does", line)
            if down and not now_down:
                logger.warning("the store's engines answer again: SERVING")
            down = now_down
        now_affected = (DISK_SERVICES if low else frozenset()) | (
            ENGINE_SERVICES if down else frozenset()
        )
        await board.report("store", now_affected)
        await asyncio.sleep(interval_s)
