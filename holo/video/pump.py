"""Frames from a thread to the event loop: the one way a track is fed.

Sources block (FFmpeg reads, a replay's pacing waits), so each track's frames are read in a
thread of their own and handed to the loop with ``call_soon_threadsafe``. At most
:data:`MAX_HANDOFF` frames wait for the loop: a source faster than real time, or a loop
that is busy, holds its thread rather than memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable

from holo.errors import HoloError
from holo.video.frames import Frame

__all__ = ["MAX_HANDOFF", "pump_frames"]

logger = logging.getLogger(__name__)

MAX_HANDOFF = 60  # frames (2 s at 30 fps) a source thread may have waiting for the loop


def pump_frames(
    frames: Iterable[Frame],
    deliver: Callable[[Frame], None],
    *,
    name: str,
    running: Callable[[], bool],
    pace: Callable[[Frame], bool] | None = None,
    on_end: Callable[[str], None] | None = None,
    close: Callable[[], None] | None = None,
) -> threading.Thread:
    """Start a thread that hands every frame of ``frames`` to ``deliver`` on this loop.

    Parameters
    ----------
    frames
        Read in the thread (it may block); a :class:`~holo.errors.HoloError` or any other
        exception ends the pump with that reason (a source's failure ends its track, never
        the node).
    deliver
        Called on the loop with each frame, in order.
    running
        Checked while waiting for room: False stops the pump quietly (a track that ended).
    pace
        Called in the thread before each frame; it may sleep until the frame is due, and
        returns False to stop quietly (a replay that moved elsewhere).
    on_end
        Called on the loop with the reason once the frames ran out or failed (not when
        stopped by ``running``, ``pace`` or a closed loop).
    close
        Called in the thread when it ends, however it ends (releases the source).
    """
    loop = asyncio.get_running_loop()
    room = threading.Semaphore(MAX_HANDOFF)

    def handed(frame: Frame) -> None:
        room.release()
        deliver(frame)

    def run() -> None:
        reason = "end of stream"
        try:
            for frame in frames:
                if pace is not None and not pace(frame):
                    return
                while not room.acquire(timeout=1.0):
                    if not running() or loop.is_closed():
                        return
                try:
                    loop.call_soon_threadsafe(handed, frame)
                except RuntimeError:  # the loop closed meanwhile: the server stopped
                    return
        except HoloError as err:
            reason = str(err)
        except Exception as err:  # FFmpeg's own errors: the track ends, the node stays
            logger.exception("%s: the source failed", name)
            reason = f"the source failed: {err}"
        finally:
            if close is not None:
                close()
        if on_end is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(on_end, reason)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread
