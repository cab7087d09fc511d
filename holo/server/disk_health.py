"""Health follows the disk: NOT_SERVING while the data folder's disk is full or below the
reserve (:mod:`holo.store.space`), SERVING again once space is freed.

What goes NOT_SERVING is what cannot work then: the server as a whole (``""``, what
monitoring and load balancers ask by default, so an operator hears of it) and the two
services that write to the disk, UploadService (new uploads are refused) and
ConversionService (models). Sessions, models, video and the clock keep SERVING: they run
on what the reserve keeps free, and a balancer asking for them must not drop a procedure
in progress.
"""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health, health_pb2

from holo.store.space import DiskSpace
from holo.v1 import asset_pb2

__all__ = ["DISK_CHECK_INTERVAL_S", "WRITING_SERVICES", "watch_disk"]

logger = logging.getLogger(__name__)

#: How often free space is read. A statvfs costs microseconds; 2 s is well inside the
#: 5-10 s at which load balancers and Kubernetes usually ask for health.
DISK_CHECK_INTERVAL_S = 2.0

#: The services that need free space, besides the server as a whole ("").
WRITING_SERVICES = tuple(
    asset_pb2.DESCRIPTOR.services_by_name[name].full_name
    for name in ("UploadService", "ConversionService")
)


async def watch_disk(
    space: DiskSpace,
    servicer: health.aio.HealthServicer,
    interval_s: float = DISK_CHECK_INTERVAL_S,
) -> None:
    """Set the health of ``""`` and :data:`WRITING_SERVICES` from the free space, every
    ``interval_s`` seconds, until cancelled; each change is logged once."""
    low = False
    while True:
        try:
            # Off the loop: statvfs of a stalled network volume can block.
            now_low = await asyncio.to_thread(space.low)
            free = await asyncio.to_thread(space.free_bytes)
        except OSError as err:
            logger.warning("cannot read the free space of the data folder: %s", err)
            now_low, free = low, 0
        if now_low != low:
            low = now_low
            status = (
                health_pb2.HealthCheckResponse.NOT_SERVING
                if low
                else (health_pb2.HealthCheckResponse.SERVING)
            )
            for name in ("", *WRITING_SERVICES):
                await servicer.set(name, status)
            if low:
                logger.warning(
                    "the disk of data folder %r is full: %d MiB free, %d MiB reserved; new "
                    "uploads are refused and health says NOT_SERVING until space is freed",
                    space.name,
                    free >> 20,
                    space.reserve_bytes >> 20,
                )
            else:
                logger.warning(
                    "the disk of data folder %r has room again (%d MiB free): SERVING",
                    space.name,
                    free >> 20,
                )
        await asyncio.sleep(interval_s)
