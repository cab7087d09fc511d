"""Opt-in memory snapshots of a running server, to find what grows (``benchmarks/soak.py``).

With ``HOLO_TRACEMALLOC=DIR`` in its environment, ``holo serve`` starts :mod:`tracemalloc`
(``HOLO_TRACEMALLOC_FRAMES`` frames per allocation, default 8) and, on each SIGUSR1, writes
``DIR/NNN.tracemalloc`` (a :class:`tracemalloc.Snapshot`) and ``DIR/NNN.json``: the
process's resident memory, the bytes Python allocated that are still alive (traced: numpy's
arrays included, not VTK's, SimpleITK's or gRPC core's), and glibc's heap figures
(``mallinfo2``: bytes in use and bytes the allocator holds). When RSS grows while the
traced bytes and glibc's bytes in use stay flat, what grows is free memory the allocator
keeps (fragmentation), not something holo holds. ``benchmarks/memdiff.py`` compares two
snapshots, grouped by traceback.

After each snapshot the JSON also gets a census of the garbage in reference cycles: the
objects a full collection (the frozen ones included, :mod:`holo.quietgc`) finds
unreachable, by type. Those are freed only by full collections, which the server runs every
15 minutes; so each snapshot also collects them, and the next census counts what piled up
since.

Tracing costs memory and CPU (in the soak: tracemalloc's own memory about as much as it
traces, the durable p99 5-25 ms instead of 2-5, and a snapshot stops the loop for 0.1-0.5 s):
a diagnosis, never on in production.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import json
import logging
import os
import signal
import time
import tracemalloc
from pathlib import Path

__all__ = ["heap_figures", "install"]

logger = logging.getLogger(__name__)

ENV = "HOLO_TRACEMALLOC"
FRAMES_ENV = "HOLO_TRACEMALLOC_FRAMES"


class _Mallinfo2(ctypes.Structure):
    # glibc >= 2.33, <malloc.h>: every field a size_t.
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",  # bytes of non-mmapped heap the allocator holds (every arena)
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",  # bytes in mmapped blocks (large allocations, returned on free)
            "usmblks",
            "fsmblks",
            "uordblks",  # bytes in use in the heap
            "fordblks",  # bytes free in the heap: held, not in use
            "keepcost",
        )
    ]


def _mallinfo2() -> _Mallinfo2 | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    call = getattr(libc, "mallinfo2", None)  # not on musl, nor glibc < 2.33
    if call is None:
        return None
    call.restype = _Mallinfo2
    info: _Mallinfo2 = call()
    return info


def heap_figures() -> dict[str, float]:
    """This process's memory now, in MB: resident, Python's traced bytes (0 when tracemalloc
    is off) and tracemalloc's own, and glibc's heap (absent where there is no mallinfo2)."""
    figures: dict[str, float] = {}
    mb = 1 << 20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            figures["rss_mb"] = int(line.split()[1]) / 1024
    traced, _peak = tracemalloc.get_traced_memory()
    figures["traced_mb"] = traced / mb
    figures["tracemalloc_own_mb"] = tracemalloc.get_tracemalloc_memory() / mb
    info = _mallinfo2()
    if info is not None:
        figures["malloc_in_use_mb"] = (info.uordblks + info.hblkhd) / mb
        figures["malloc_held_mb"] = (info.arena + info.hblkhd) / mb
        figures["malloc_free_held_mb"] = info.fordblks / mb
    return figures


def _write(folder: Path, number: int) -> Path:
    path = folder / f"{number:03d}.tracemalloc"
    started = time.perf_counter()
    tracemalloc.take_snapshot().dump(str(path))
    took = time.perf_counter() - started
    figures = {"unix_s": time.time(), "snapshot_s": took, **heap_figures()}
    path.with_suffix(".json").write_text(json.dumps(figures, indent=1) + "\n")
    return path


def _garbage_census(top: int = 12) -> dict[str, object]:
    """Collect everything, frozen objects included; what was cyclic garbage, by type."""
    gc.unfreeze()  # quietgc freezes again within seconds
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        found = gc.collect()
        types: dict[str, int] = {}
        for obj in gc.garbage:
            name = type(obj).__qualname__
            types[name] = types.get(name, 0) + 1
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
    gc.collect()  # what DEBUG_SAVEALL kept in gc.garbage is cyclic garbage still: free it
    ranked = sorted(types.items(), key=lambda kv: -kv[1])[:top]
    return {"gc_garbage_objects": found, "gc_garbage_by_type": dict(ranked)}


def install(loop: asyncio.AbstractEventLoop) -> bool:
    """Start tracing and snapshot on SIGUSR1 when ``HOLO_TRACEMALLOC`` names a folder; True
    when it does."""
    folder = os.environ.get(ENV, "")
    if not folder:
        return False
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(int(os.environ.get(FRAMES_ENV, "8")))
    taken = 0
    busy = False

    def on_signal() -> None:
        nonlocal taken, busy
        if busy:  # one at a time: a snapshot of a large heap takes seconds
            return
        busy, taken = True, taken + 1

        def done(task: asyncio.Future[Path]) -> None:
            nonlocal busy
            busy = False
            if task.exception() is not None:
                logger.error("memory snapshot failed: %s", task.exception())
            else:
                path = task.result().with_suffix(".json")
                figures = {**json.loads(path.read_text()), **_garbage_census()}
                path.write_text(json.dumps(figures, indent=1) + "\n")
                logger.warning("memory snapshot written: %s", task.result())

        loop.run_in_executor(None, _write, out, taken).add_done_callback(done)

    loop.add_signal_handler(signal.SIGUSR1, on_signal)
    logger.warning("tracemalloc on (%s): SIGUSR1 writes a snapshot there", out)
    return True
