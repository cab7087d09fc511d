"""Fan-out of one video track to its viewers, bounded per viewer.

A :class:`Track` keeps the frames since its latest keyframe (the group of pictures a new
viewer needs to start decoding), and one :class:`Viewer` per watcher: a queue of frames
bounded by count and bytes. A viewer that falls behind that bound loses its queue and skips
to the next keyframe (it could not decode the frames in between without the ones it lost),
with a note of what it did not get; other viewers are not affected, and memory per viewer
stays bounded. Healthy viewers get every frame, in order.

Everything runs on the event loop; ingest threads hand frames over with
``loop.call_soon_threadsafe(track.publish, frame)``. Transport-neutral: no grpc here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from holo import metrics
from holo.errors import InvalidRequestError
from holo.video.frames import CodecParams, Frame

__all__ = ["TRACK_KINDS", "Skipped", "Track", "Viewer", "ViewerLimits", "check_track"]

logger = logging.getLogger(__name__)

TRACK_KINDS = ("endoscope", "room_camera", "headset_camera", "other")
_BEHIND = "the viewer fell too far behind; skipped to the next keyframe"


@dataclass(frozen=True, slots=True)
class ViewerLimits:
    """How far a viewer may fall behind before it skips to the next keyframe. At 30 fps,
    90 frames are 3 s; 32 MiB holds 3 s of 1080p H.264 at 80 Mbit/s, well above what an
    operative camera sends."""

    max_frames: int = 90
    max_bytes: int = 32 << 20


@dataclass(frozen=True, slots=True)
class Skipped:
    """Frames ``[first_index, next_index)`` were not sent to a viewer; the next is a keyframe."""

    first_index: int
    next_index: int
    reason: str


class Viewer:
    """One watcher of a track: its queue, and whether it waits for a keyframe."""

    def __init__(self, track: Track, limits: ViewerLimits) -> None:
        self.track = track
        self._limits = limits
        self._queue: deque[Frame | Skipped] = deque()
        self._bytes = 0
        self._skip_from: int | None = None  # first frame index not delivered, while skipping
        self._started = False  # a viewer's first frame is a keyframe (earlier ones dropped)
        self._wake = asyncio.Event()
        self.frames_sent = 0
        self.frames_skipped = 0
        self.skips = 0
        self.closed = False

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def push(self, frame: Frame) -> None:
        if not self._started:
            if not frame.keyframe:
                return  # nothing before a keyframe can be decoded
            self._started = True
        if self._skip_from is not None:
            if not frame.keyframe:
                self.frames_skipped += 1
                metrics.VIDEO_FRAMES_SKIPPED.inc()
                return
            self._queue.append(Skipped(self._skip_from, frame.index, _BEHIND))
            self._skip_from = None
        frames = len(self._queue)
        if (
            frames >= self._limits.max_frames
            or self._bytes + len(frame.data) > self._limits.max_bytes
        ):
            # Too far behind: what waits goes, and the viewer resumes at the next keyframe
            # (this one, if it is one).
            first = next((f.index for f in self._queue if isinstance(f, Frame)), frame.index)
            dropped = sum(isinstance(f, Frame) for f in self._queue)
            self._queue.clear()
            self._bytes = 0
            self.skips += 1
            self.frames_skipped += dropped
            metrics.VIDEO_FRAMES_SKIPPED.inc(dropped)
            if frame.keyframe:
                self._queue.append(Skipped(first, frame.index, _BEHIND))
            else:
                self._skip_from = first
                self.frames_skipped += 1
                metrics.VIDEO_FRAMES_SKIPPED.inc()
                self._wake.set()
                return
        self._queue.append(frame)
        self._bytes += len(frame.data)
        self._wake.set()

    def discontinuity(self, reason: str) -> None:
        """What was queued goes (a replay seek); the note says so, the next frame is a
        keyframe (its index unknown yet: ``next_index`` is 0)."""
        first = next((f.index for f in self._queue if isinstance(f, Frame)), 0)
        self._queue.clear()
        self._bytes = 0
        self._skip_from = None
        self._started = False  # the next frame it gets is a keyframe
        self._queue.append(Skipped(first, 0, reason))
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def next(self) -> Frame | Skipped | None:
        """The next frame or skip note, in order; None once the track ended and the queue
        is drained (or the viewer was closed)."""
        while True:
            if self._queue:
                item = self._queue.popleft()
                if isinstance(item, Frame):
                    self._bytes -= len(item.data)
                    self.frames_sent += 1
                return item
            if self.closed or not self.track.live:
                return None
            self._wake.clear()
            await self._wake.wait()

    def close(self) -> None:
        self.closed = True
        self._wake.set()


def check_track(name: str, kind: str) -> None:
    """Raise unless ``name`` and ``kind`` make a track (before any source is opened)."""
    if kind not in TRACK_KINDS:
        raise InvalidRequestError(f"track kind {kind!r}: choose one of {', '.join(TRACK_KINDS)}")
    if not name or len(name) > 64:
        raise InvalidRequestError("a track needs a name of 1 to 64 characters, e.g. 'endoscope'")


class Track:
    """One video track of a session as this node serves it."""

    def __init__(
        self,
        track_id: str,
        session_id: str,
        name: str,
        kind: str,
        params: CodecParams,
        *,
        limits: ViewerLimits | None = None,
    ) -> None:
        check_track(name, kind)
        self.track_id = track_id
        self.session_id = session_id
        self.name = name
        self.kind = kind
        self.params = params
        self.limits = limits or ViewerLimits()
        self.frames = 0
        self.last_t_ns = 0
        self.live = True
        self.ended_reason = ""
        self._gop: list[Frame] = []  # from the latest keyframe on, within the viewer limits
        self._gop_bytes = 0
        self._viewers: set[Viewer] = set()
        # Called with every frame, on the loop (the recorder); an exception is logged.
        self.taps: list[Callable[[Frame], None]] = []
        self.on_end: list[Callable[[Track], None]] = []  # called once, when it ends
        self._ended = asyncio.Event()

    def info(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "session_id": self.session_id,
            "name": self.name,
            "kind": self.kind,
            "params": self.params,
            "frames": self.frames,
            "last_t_ns": self.last_t_ns,
            "live": self.live,
            "ended_reason": self.ended_reason,
        }

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def publish(self, frame: Frame) -> None:
        """A new frame from ingest, in decode order."""
        if not self.live:
            return
        if frame.keyframe:
            self._gop, self._gop_bytes = [frame], len(frame.data)
        elif self._gop:
            self._gop.append(frame)
            self._gop_bytes += len(frame.data)
            limits = self.limits
            if len(self._gop) >= limits.max_frames or self._gop_bytes >= limits.max_bytes:
                # A group of pictures longer than a viewer may queue: not kept (memory
                # stays bounded); a new viewer then starts at the next keyframe.
                self._gop, self._gop_bytes = [], 0
        # Before the first keyframe there is nothing a new viewer could decode: not kept.
        self.frames += 1
        self.last_t_ns = frame.t_ns
        for viewer in self._viewers:
            viewer.push(frame)
        for tap in self.taps:
            try:
                tap(frame)
            except Exception:
                logger.exception("track %s: a frame tap failed", self.track_id)

    def restart(self, reason: str) -> None:
        """A discontinuity (a replay seek): forget the group of pictures, and tell every
        viewer (a :class:`Skipped` in place of what it had queued); the next frame is a
        keyframe at the new position."""
        self._gop, self._gop_bytes = [], 0
        for viewer in self._viewers:
            viewer.discontinuity(reason)

    def watch(self) -> Viewer:
        """A new viewer, starting at the latest keyframe (the frames since it are queued)."""
        viewer = Viewer(self, self.limits)
        for frame in self._gop:
            viewer.push(frame)
        self._viewers.add(viewer)
        return viewer

    def unwatch(self, viewer: Viewer) -> None:
        self._viewers.discard(viewer)
        viewer.close()

    def end(self, reason: str) -> None:
        if not self.live:
            return
        self.live = False
        self.ended_reason = reason
        self._gop, self._gop_bytes = [], 0
        for viewer in self._viewers:
            viewer.wake()  # drained, then next() returns None
        self._ended.set()
        for callback in self.on_end:
            callback(self)

    async def wait_ended(self) -> None:
        await self._ended.wait()
