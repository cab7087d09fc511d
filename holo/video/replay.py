"""A recording served as a read-only session: events, ephemeral values and video on one clock.

A :class:`ReplaySession` has its own :class:`ReplayClock`, which runs in the recording's
session time at the replay's speed, and jumps on a seek. Its durable events and ephemeral
values go to joined viewers when the clock reaches their ``t_ns``, through the same
subscriber interface the live hub uses (``next()`` returning ``("events", [...])``,
``("ephemeral", EphemeralFrame)`` or ``("resync", state)``), so the same SessionService
stream serves both. Its tracks are :class:`holo.video.relay.Track` objects fed by a thread
per track that reads the recorded frames and hands each over when the clock reaches its
``t_ns``. Every ``t_ns`` is the recorded one: a viewer pairs frames and state exactly as it
did live.

A seek sends every viewer a resync with the state as of the new position, and restarts
each track at the last keyframe at or before it.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from holo.errors import InvalidRequestError, SessionError
from holo.session.hub import EphemeralFrame
from holo.session.state import Event, SessionState, apply
from holo.video.recording import Recording
from holo.video.relay import Track, ViewerLimits

__all__ = ["REPLAY_PREFIX", "ReplayClock", "ReplaySession", "is_replay"]

logger = logging.getLogger(__name__)

_STEP_S = 0.005  # how often a paused or far-ahead pacing thread looks at the clock again
MAX_SPEED = 16.0
REPLAY_PREFIX = "rpl-"  # a replay's session id starts so; a live session's never does
MAX_BACKLOG = 4096  # items a replay viewer may have waiting


class ReplayClock:
    """Recording time, advancing at ``speed`` real nanoseconds per nanosecond (0: paused).
    ``epoch`` changes at every jump or change of rate (clients drop older clock samples)."""

    def __init__(self, position_ns: int, speed: float = 1.0) -> None:
        self._lock = threading.Lock()  # read by pacing threads
        self._pos0 = position_ns
        self._mono0 = time.monotonic_ns()
        self.speed = speed
        self.paused = False
        self.epoch = 1

    @property
    def rate(self) -> float:
        return 0.0 if self.paused else self.speed

    def now_ns(self) -> int:
        with self._lock:
            return self._pos0 + round((time.monotonic_ns() - self._mono0) * self.rate)

    def _rebase(self, position_ns: int | None = None) -> None:
        now = time.monotonic_ns()
        self._pos0 = (
            self._pos0 + round((now - self._mono0) * self.rate)
            if position_ns is None
            else position_ns
        )
        self._mono0 = now
        self.epoch += 1

    def seek(self, position_ns: int) -> None:
        with self._lock:
            self._rebase(position_ns)

    def set(self, *, speed: float | None = None, paused: bool | None = None) -> None:
        with self._lock:
            self._rebase()
            if speed is not None:
                self.speed = speed
            if paused is not None:
                self.paused = paused


class ReplaySubscription:
    """One viewer of a replay: what the driver pushed since it last asked. A viewer that
    falls :data:`MAX_BACKLOG` items behind is sent a resync (the state as of the replay
    clock then) instead of a longer queue."""

    def __init__(self, participant_id: str, resync: Callable[[], tuple[SessionState, int]]):
        self.participant_id = participant_id
        self._resync = resync
        self._items: deque[tuple[str, Any]] = deque()
        self._wake = asyncio.Event()
        self.closed = False
        self.resyncs = 0

    def push(self, kind: str, item: Any) -> None:
        if kind != "resync" and len(self._items) >= MAX_BACKLOG:
            kind, item = "resync", self._resync()  # a stalled viewer: start it again
        if kind == "resync":
            self._items.clear()  # what waited is superseded by the state
            self.resyncs += 1
        self._items.append((kind, item))
        self._wake.set()

    async def next(self) -> tuple[str, Any]:
        while True:
            if self.closed:
                raise SessionError("the subscription was closed")
            if self._items:
                return self._items.popleft()
            self._wake.clear()
            await self._wake.wait()

    def close(self) -> None:
        self.closed = True
        self._wake.set()


class ReplaySession:
    """One recording, replayed. Start with :meth:`start`; :meth:`stop` when done."""

    def __init__(
        self, recording_id: str, recording: Recording, *, speed: float = 1.0, opener: str = ""
    ) -> None:
        _check_speed(speed)
        # The token subject that opened it, the one who controls it ("": anyone in the case,
        # as for `holo replay`).
        self.opener = opener
        self.recording_id = recording_id
        self.recording = recording
        self.session_id = f"{REPLAY_PREFIX}{secrets.token_hex(6)}"
        self.case_id = recording.case_id
        self.created_t_ns = recording.started_t_ns
        self.clock = ReplayClock(recording.started_t_ns, speed)
        self.events: list[Event] = recording.events()
        # Events go out in seq order (a client's fold needs it), each once the clock has
        # passed its own and every earlier event's t_ns (stamps may be up to 1 s out of
        # order): the running maximum, non-decreasing.
        self._event_times: list[int] = []
        for event in self.events:
            latest = self._event_times[-1] if self._event_times else event.t_ns
            self._event_times.append(max(latest, event.t_ns))
        self.ephemeral: list[dict[str, Any]] = sorted(
            recording.ephemeral(), key=lambda u: int(u["t_ns"])
        )
        self._ephemeral_times = [int(u["t_ns"]) for u in self.ephemeral]
        self.tracks: dict[str, Track] = {}
        for info in recording.tracks:
            self.tracks[info.track_id] = Track(
                info.track_id,
                self.session_id,
                info.name,
                info.kind,
                info.params,
                limits=ViewerLimits(),
            )
        self._subscribers: set[ReplaySubscription] = set()
        self._driver: asyncio.Task[None] | None = None
        self._generation = 0  # pacing threads of an older generation stop
        self.last_used = time.monotonic()

    def info(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "case_id": self.case_id,
            "created_t_ns": self.created_t_ns,
        }

    def state_at(self, t_ns: int) -> SessionState:
        """The state a viewer holds at ``t_ns``: the fold of the events delivered by then
        (a prefix of the log, so the events after it follow gap-free)."""
        state = SessionState()
        for event in self.events[: bisect.bisect_right(self._event_times, t_ns)]:
            apply(state, event)
        return state

    # clock control ---------------------------------------------------------------------

    async def start(self) -> None:
        self._restart(self.clock.now_ns())

    def _restart(self, position: int) -> None:
        """(Re)start the event driver and the track threads from ``position``, the state
        viewers were given."""
        loop = asyncio.get_running_loop()
        if self._driver is not None:
            self._driver.cancel()
        self._generation += 1
        self._driver = asyncio.create_task(self._drive(position), name=f"replay {self.session_id}")
        for track in self.tracks.values():
            track.restart("the replay moved to another time")
            threading.Thread(
                target=self._pace_track,
                args=(loop, track, position, self._generation),
                name=f"replay {self.session_id} {track.track_id}",
                daemon=True,
            ).start()

    def seek(self, t_ns: int) -> None:
        self.clock.seek(t_ns)
        state = self.state_at(t_ns)
        for sub in self._subscribers:
            sub.push("resync", (state.copy(), t_ns))
        self._restart(t_ns)  # events after the resync's state, none lost in between

    def set_speed(self, speed: float) -> None:
        _check_speed(speed)
        self.clock.set(speed=speed)

    def pause(self, paused: bool) -> None:
        self.clock.set(paused=paused)

    async def _sleep_until(self, t_ns: int) -> None:
        while True:
            now = self.clock.now_ns()
            if now >= t_ns:
                return
            rate = self.clock.rate
            wait = (t_ns - now) / rate / 1e9 if rate > 0 else 0.05
            await asyncio.sleep(min(wait, 0.05))

    async def _drive(self, position: int) -> None:
        """Deliver events and ephemeral values from ``position`` on, at their times."""
        k = bisect.bisect_right(self._event_times, position)
        j = bisect.bisect_right(self._ephemeral_times, position)
        while k < len(self.events) or j < len(self.ephemeral):
            next_event = self._event_times[k] if k < len(self.events) else None
            next_value = self._ephemeral_times[j] if j < len(self.ephemeral) else None
            if next_value is None or (next_event is not None and next_event <= next_value):
                assert next_event is not None
                await self._sleep_until(next_event)
                batch = []
                while k < len(self.events) and self._event_times[k] <= self.clock.now_ns():
                    batch.append(self.events[k])
                    k += 1
                for sub in self._subscribers:
                    sub.push("events", batch)
            else:
                await self._sleep_until(next_value)
                values = []
                while j < len(self.ephemeral) and self._ephemeral_times[j] <= self.clock.now_ns():
                    values.append(self.ephemeral[j])
                    j += 1
                frame = EphemeralFrame(values)  # serialised once for every viewer
                for sub in self._subscribers:
                    sub.push("ephemeral", frame)

    def _pace_track(
        self, loop: asyncio.AbstractEventLoop, track: Track, position: int, generation: int
    ) -> None:
        """Hand the track's recorded frames over at their times, from the last keyframe at
        or before ``position`` (the frames before ``position`` at once: the decoder needs
        them to show the frame at ``position``)."""
        try:
            for frame in self.recording.frames(track.track_id, from_t_ns=position):
                while self._generation == generation and self.clock.now_ns() < frame.t_ns:
                    rate = self.clock.rate
                    ahead = (frame.t_ns - self.clock.now_ns()) / 1e9
                    time.sleep(min(ahead / rate, _STEP_S * 10) if rate > 0 else _STEP_S)
                if self._generation != generation or loop.is_closed():
                    return
                loop.call_soon_threadsafe(self._publish, track, frame, generation)
        except Exception:
            logger.exception("replay %s: reading track %s failed", self.session_id, track.track_id)

    def _publish(self, track: Track, frame: Any, generation: int) -> None:
        if generation == self._generation:  # not a frame of before a seek
            track.publish(frame)

    # viewers ---------------------------------------------------------------------------

    def subscribe(self) -> tuple[ReplaySubscription, tuple[SessionState, int]]:
        """A new viewer and the state it starts from, with its time on the replay clock."""
        self.last_used = time.monotonic()
        sub = ReplaySubscription(f"viewer-{secrets.token_hex(4)}", self._state_now)
        self._subscribers.add(sub)
        return sub, self._state_now()

    def _state_now(self) -> tuple[SessionState, int]:
        now = self.clock.now_ns()
        return self.state_at(now), now

    @property
    def viewers(self) -> int:
        return len(self._subscribers) + sum(t.viewers for t in self.tracks.values())

    def unsubscribe(self, sub: ReplaySubscription) -> None:
        self._subscribers.discard(sub)
        sub.close()

    async def stop(self) -> None:
        self._generation += 1
        if self._driver is not None:
            self._driver.cancel()
            await asyncio.gather(self._driver, return_exceptions=True)
        for sub in list(self._subscribers):
            sub.close()
        for track in self.tracks.values():
            track.end("the replay was closed")


def is_replay(session_id: str) -> bool:
    """Whether ``session_id`` names a replay (not a live session)."""
    return session_id.startswith(REPLAY_PREFIX)


def _check_speed(speed: float) -> None:
    if not 0 < speed <= MAX_SPEED:
        raise InvalidRequestError(f"replay speed {speed:g}: choose one in (0, {MAX_SPEED:g}]")
