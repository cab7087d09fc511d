"""Short garbage-collector pauses for a process that serves or reads many streams.

CPython's full collections walk every tracked object: with hundreds of streams a node holds
a few hundred thousand, and one collection stops the event loop for 40-70 ms (measured on
``benchmarks/session.py``), which is every stream's p99. :func:`keep_collections_young`
moves what has survived so far out of the collector's reach every few seconds
(:func:`gc.freeze`, after a young collection), so full collections only walk what is newer;
every ``full_every_s`` it takes everything back and collects it all once, so cycles frozen
meanwhile are not kept for good (holo's long-lived objects form few: the full collections
measured found 0-12 each).
"""

from __future__ import annotations

import asyncio
import gc
import time

__all__ = ["keep_collections_young"]


async def keep_collections_young(interval_s: float = 5.0, full_every_s: float = 900.0) -> None:
    """Run forever (a task of the process's event loop)."""
    full_at = time.monotonic() + full_every_s
    while True:
        await asyncio.sleep(interval_s)
        if time.monotonic() >= full_at:
            gc.unfreeze()
            gc.collect()
            full_at = time.monotonic() + full_every_s
        gc.collect(1)
        gc.freeze()
