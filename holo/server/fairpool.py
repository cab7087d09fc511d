"""A bounded pool for the heavy work of requests (study indexing, zip extraction), fair
between callers.

Why a pool of its own: ``asyncio.to_thread`` runs in the event loop's default executor,
``min(32, cpus + 4)`` threads (6 on a 2-core node), which every RPC's store calls share.
Eight concurrent ``CreateStudy`` of a 70 MB study held all six for seconds each, and an
observer's ``ListModels`` (3-7 ms idle) waited 3 s behind them. Heavy work here gets
``workers`` threads of its own (default 2), so store calls always find the default
executor free of it.

Why threads, not processes: the work is reading DICOM headers with pydicom (Python, so it
holds the GIL, but much of it waits on the disk) and inflating zip members (zlib, which
releases the GIL). Two threads leave the event loop at least a third of the interpreter
at worst (the GIL switches every 5 ms), and a thread needs no pickling of the study's
file list and summary, nor a process start (about 1 s to import pydicom) per study.

Why fair: the work waits in one queue per caller (the token's subject), and a free thread
goes to the caller with the fewest running, the longest-waiting first among equals: a
radiologist's eight studies take turns with a colleague's one instead of going first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, TypeVar

from holo.errors import PreconditionError

__all__ = ["FairPool"]

T = TypeVar("T")

_STOPPING = "the server is stopping; send the request again later"


class FairPool:
    """``workers`` threads for blocking work, handed out fairly between callers.

    Used from one event loop; :meth:`run` is awaited there, the work runs in a thread.

    Parameters
    ----------
    workers
        How many pieces of work run at once; the rest wait in their caller's queue.
    """

    def __init__(self, workers: int = 2, *, name: str = "holo-heavy") -> None:
        self.workers = max(1, workers)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self.workers, thread_name_prefix=name
        )
        self._free = self.workers
        # caller -> its waiting turns, in the order callers started waiting
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self._running: dict[str, int] = {}
        self._closed = False

    async def run(self, caller: str, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a thread of the pool when it is ``caller``'s turn."""
        if self._closed:
            raise PreconditionError(_STOPPING)
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        self._waiting.setdefault(caller, deque()).append(turn)
        self._dispatch()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # granted, then cancelled: give it back
                self._release(caller)
            raise
        try:
            work = self._executor.submit(functools.partial(fn, *args))
        except RuntimeError:  # shut down meanwhile
            self._release(caller)
            raise PreconditionError(_STOPPING) from None
        # The turn ends when the thread does, not when the caller stops waiting (a
        # cancelled call's thread runs on): the bound holds for threads, not for awaits.
        work.add_done_callback(
            lambda _: (
                loop.call_soon_threadsafe(self._release, caller) if not loop.is_closed() else None
            )
        )
        return await asyncio.wrap_future(work)

    def _release(self, caller: str) -> None:
        self._free += 1
        left = self._running.get(caller, 0) - 1
        if left > 0:
            self._running[caller] = left
        else:
            self._running.pop(caller, None)
        self._dispatch()

    def _dispatch(self) -> None:
        while self._free > 0 and self._waiting:
            # The caller with the fewest running; among equals, the one waiting longest.
            caller = min(self._waiting, key=lambda c: self._running.get(c, 0))
            queue = self._waiting.pop(caller)
            turn = queue.popleft()
            if queue:  # to the back of the line
                self._waiting[caller] = queue
            if turn.done():  # cancelled while it waited
                continue
            self._free -= 1
            self._running[caller] = self._running.get(caller, 0) + 1
            turn.set_result(None)

    def close(self) -> None:
        """Refuse new work; work not yet started is dropped, running work finishes."""
        self._closed = True
        for queue in self._waiting.values():
            for turn in queue:
                if not turn.done():
                    turn.set_exception(PreconditionError(_STOPPING))
        self._waiting.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
