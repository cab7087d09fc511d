"""A recording served as a read-only session: events, ephemeral values and video on one clock.

A :class:`ReplaySession` has its own :class:`ReplayClock`, which runs in the recording's
session time at the replay's speed, and jumps on a seek. Its durable events and ephemeral
values go to joined viewers when the clock reaches their ``t_ns``, as the same typed items
a live session's subscribers yield (:mod:`holo.session.fanout`), and it answers the same
:class:`~holo.session.served.ServedSession` interface, so the same services serve both.
Its tracks are :class:`holo.video.relay.Track` objects fed by a pacing thread per track
(:func:`holo.video.pump.pump_frames`) that hands each recorded frame over when the clock
reaches its ``t_ns``. Every ``t_ns`` is the recorded one: a viewer pairs frames and state
exactly as it did live.

A seek sends every viewer a resync with the state as of the new position, and restarts
each track at the last keyframe at or before it.

Control is checked whole before anything is applied (:meth:`ReplaySession.control`): a
seek target outside the recording's span (``started_t_ns`` to ``stopped_t_ns``) or a speed
outside :data:`MIN_SPEED` .. :data:`MAX_SPEED` is refused, not clamped, and leaves the
replay as it was. The clock itself saturates at the int64 range the wire carries, whatever
it is given, so no position it reports can fail to encode.

When it starts (:data:`holo.recording.START_MODES`): ``now`` (the clock runs from the
recording's start at once), ``join`` (it waits, paused at the start, for the first viewer
to join: nobody misses the beginning) or ``paused`` (it waits for a ControlReplay resume).
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable

from holo.errors import InvalidRequestError, PreconditionError, SessionError
from holo.recording import START_MODES
from holo.recording.files import Recording
from holo.session.fanout import EphemeralFrame, EventBatch, Resync, SubscriptionItem
from holo.session.records import EphemeralUpdate, SessionInfo
from holo.session.served import Intent, Joined, Joiner
from holo.session.state import Event, EventData, SessionState, apply
from holo.video.frames import Frame
from holo.video.pump import pump_frames
from holo.video.relay import Track, ViewerLimits

__all__ = [
    "MAX_SPEED",
    "MIN_SPEED",
    "ReplayClock",
    "ReplaySession",
    "ReplaySubscription",
    "check_speed",
]

logger = logging.getLogger(__name__)

_STEP_S = 0.005  # how often a paused or far-ahead pacing thread looks at the clock again
#: Replay speeds, session ns per real ns. 16x runs an hour's procedure in under 4 minutes
#: (a 30 fps track then paces 480 frames/s); 1/16x shows a 30 fps track at ~2 frames/s,
#: slower than anyone studies a motion. Below that a rate only stalls the replay: 1e-300
#: made every wait ``ahead / rate`` infinite. Pause is ControlReplay's ``pause``, not 0.
MIN_SPEED = 1 / 16
MAX_SPEED = 16.0
#: What an int64 t_ns on the wire holds: the replay clock saturates there.
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
MAX_BACKLOG = 4096  # items a replay viewer may have waiting
_READ_ONLY = "a replay is read-only; ControlReplay seeks it"
_MOVED = "the replay moved; start again from this state"


class ReplayClock:
    """Recording time, advancing at ``speed`` real nanoseconds per nanosecond (0: paused).
    ``epoch`` changes at every jump or change of rate (clients drop older clock samples).

    Whatever it is given, what it reports stays in the int64 range of the wire: positions
    saturate at :data:`INT64_MIN` / :data:`INT64_MAX`, and a speed outside
    :data:`MIN_SPEED` .. :data:`MAX_SPEED` is refused (:func:`check_speed`)."""

    def __init__(self, position_ns: int, speed: float = 1.0, *, paused: bool = False) -> None:
        check_speed(speed)
        self._lock = threading.Lock()  # read by pacing threads
        self._pos0 = _saturate(position_ns)
        self._mono0 = time.monotonic_ns()
        self.speed = speed
        self.paused = paused
        self.epoch = 1

    @property
    def rate(self) -> float:
        return 0.0 if self.paused else self.speed

    def now_ns(self) -> int:
        with self._lock:
            return self._at(time.monotonic_ns())

    def _at(self, mono_ns: int) -> int:
        # rate <= 16 and a monotonic span of years: a finite float, rounded exactly.
        return _saturate(self._pos0 + round((mono_ns - self._mono0) * self.rate))

    def _rebase(self, position_ns: int | None = None) -> None:
        now = time.monotonic_ns()
        self._pos0 = self._at(now) if position_ns is None else _saturate(position_ns)
        self._mono0 = now
        self.epoch += 1

    def seek(self, position_ns: int) -> None:
        with self._lock:
            self._rebase(position_ns)

    def set(self, *, speed: float | None = None, paused: bool | None = None) -> None:
        if speed is not None:
            check_speed(speed)
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

    def __init__(self, participant_id: str, resync: Callable[[], Resync]) -> None:
        self.participant_id = participant_id
        self._resync = resync
        self._items: deque[SubscriptionItem] = deque()
        self._wake = asyncio.Event()
        self.closed = False
        self.resyncs = 0

    def push(self, item: SubscriptionItem) -> None:
        if not isinstance(item, Resync) and len(self._items) >= MAX_BACKLOG:
            item = self._resync()  # a stalled viewer: start it again
        if isinstance(item, Resync):
            self._items.clear()  # what waited is superseded by the state
            self.resyncs += 1
        self._items.append(item)
        self._wake.set()

    async def next(self) -> SubscriptionItem:
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
    """One recording, replayed. Start with :meth:`start`; :meth:`stop` when done.

    Parameters
    ----------
    recording_id, recording
        What to replay.
    speed
        Session nanoseconds per real nanosecond, :data:`MIN_SPEED` .. :data:`MAX_SPEED`.
    opener
        The token subject that opened it, the one who controls it ("": anyone in the case,
        as for ``holo replay``).
    start
        One of :data:`holo.recording.START_MODES`.
    """

    read_only = True
    heartbeat_interval_s = 2.0

    def __init__(
        self,
        recording_id: str,
        recording: Recording,
        *,
        speed: float = 1.0,
        opener: str = "",
        start: str = "now",
    ) -> None:
        check_speed(speed)
        if start not in START_MODES:
            raise InvalidRequestError(
                f"replay start {start!r}: choose one of {', '.join(START_MODES)}"
            )
        self.opener = opener
        self.recording_id = recording_id
        self.recording = recording
        self.session_id = f"rpl-{secrets.token_hex(6)}"
        self.case_id = recording.case_id
        self.info = SessionInfo(self.session_id, self.case_id, recording.started_t_ns)
        self.clock = ReplayClock(recording.started_t_ns, speed, paused=start != "now")
        self._start_on_join = start == "join"
        self.events: list[Event] = recording.events()
        # Events go out in seq order (a client's fold needs it), each once the clock has
        # passed its own and every earlier event's t_ns (stamps may be up to 1 s out of
        # order): the running maximum, non-decreasing.
        self._event_times: list[int] = []
        for event in self.events:
            latest = self._event_times[-1] if self._event_times else event.t_ns
            self._event_times.append(max(latest, event.t_ns))
        self.values: list[EphemeralUpdate] = sorted(recording.ephemeral(), key=lambda u: u.t_ns)
        self._value_times = [u.t_ns for u in self.values]
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
        if self._driver is not None:
            self._driver.cancel()
        self._generation += 1
        generation = self._generation
        self._driver = asyncio.create_task(self._drive(position), name=f"replay {self.session_id}")
        for track in self.tracks.values():
            track.restart("the replay moved to another time")
            pump_frames(
                self.recording.frames(track.track_id, from_t_ns=position),
                functools.partial(self._publish, track, generation=generation),
                name=f"replay {self.session_id} {track.track_id}",
                running=functools.partial(self._current, generation),
                pace=functools.partial(self._pace, generation=generation),
            )

    def _current(self, generation: int) -> bool:
        return self._generation == generation

    @property
    def span(self) -> tuple[int, int]:
        """The session times a seek may go to: the recording's start to its stop."""
        return self.recording.started_t_ns, self.recording.stopped_t_ns

    def control(
        self,
        *,
        seek_t_ns: int | None = None,
        speed: float | None = None,
        paused: bool | None = None,
    ) -> None:
        """Seek, change speed, pause or resume, in one step: every argument is checked
        before any is applied, so a refused call leaves the replay as it was.

        Raises
        ------
        holo.errors.InvalidRequestError
            ``seek_t_ns`` outside :attr:`span` or ``speed`` outside
            :data:`MIN_SPEED` .. :data:`MAX_SPEED`.
        """
        if speed is not None:
            check_speed(speed)
        if seek_t_ns is not None:
            first, last = self.span
            if not first <= seek_t_ns <= last:
                raise InvalidRequestError(
                    f"replay seek to t_ns {seek_t_ns}: outside the recording "
                    f"({first} to {last}); seek within it"
                )
        if speed is not None or paused is not None:
            self.clock.set(speed=speed, paused=paused)
        if seek_t_ns is not None:
            self._seek(seek_t_ns)

    def _seek(self, t_ns: int) -> None:
        self.clock.seek(t_ns)
        resync = Resync(self.state_at(t_ns), t_ns, _MOVED)
        for sub in self._subscribers:
            sub.push(resync)
        self._restart(t_ns)  # events after the resync's state, none lost in between

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
        j = bisect.bisect_right(self._value_times, position)
        while k < len(self.events) or j < len(self.values):
            next_event = self._event_times[k] if k < len(self.events) else None
            next_value = self._value_times[j] if j < len(self.values) else None
            if next_value is None or (next_event is not None and next_event <= next_value):
                assert next_event is not None
                await self._sleep_until(next_event)
                batch = []
                while k < len(self.events) and self._event_times[k] <= self.clock.now_ns():
                    batch.append(self.events[k])
                    k += 1
                for sub in self._subscribers:
                    sub.push(EventBatch(batch))
            else:
                await self._sleep_until(next_value)
                values = []
                while j < len(self.values) and self._value_times[j] <= self.clock.now_ns():
                    values.append(self.values[j])
                    j += 1
                frame = EphemeralFrame(values)  # encoded once for every viewer
                for sub in self._subscribers:
                    sub.push(frame)

    def _pace(self, frame: Frame, generation: int) -> bool:
        """In a track's thread: wait until the clock reaches the frame's time (the frames
        before the start position come at once: a decoder needs them to show the frame
        there); False once the replay moved (a seek) or stopped."""
        while self._generation == generation:
            # One reading of the clock: a seek or a resume from the loop's thread between
            # two readings made the wait negative (and ValueError ended the track).
            now, rate = self.clock.now_ns(), self.clock.rate
            if now >= frame.t_ns:
                break
            ahead = (frame.t_ns - now) / 1e9
            time.sleep(min(ahead / rate, _STEP_S * 10) if rate > 0 else _STEP_S)
        return self._generation == generation

    def _publish(self, track: Track, frame: Frame, generation: int) -> None:
        if generation == self._generation:  # not a frame of before a seek
            track.publish(frame)

    # viewers (ServedSession) --------------------------------------------------------------

    async def join(self, joiner: Joiner) -> Joined:
        """A new viewer, from the state as of the replay clock now (a replay has no
        participants of its own: who joins is not recorded)."""
        self.last_used = time.monotonic()
        if self._start_on_join:
            self._start_on_join = False
            self.clock.set(paused=False)
        sub = ReplaySubscription(f"viewer-{secrets.token_hex(4)}", self._resync_now)
        self._subscribers.add(sub)
        now = self._resync_now()
        return Joined(sub, now.state, now.t_ns)

    def _resync_now(self) -> Resync:
        now = self.clock.now_ns()
        return Resync(self.state_at(now), now, _MOVED)

    async def stream_alive(self, participant_id: str) -> None:
        self.last_used = time.monotonic()

    def leave_stream(self, joined: Joined) -> None:
        sub = joined.subscription
        assert isinstance(sub, ReplaySubscription)
        self._subscribers.discard(sub)
        sub.close()

    def check_may(self, actor: str, subject: str, kind: str, data: EventData) -> None:
        raise PreconditionError(f"session {self.session_id!r}: {_READ_ONLY}")

    async def intent(self, intent: Intent) -> int:
        raise PreconditionError(f"session {self.session_id!r}: {_READ_ONLY}")

    async def ephemeral(self, update: EphemeralUpdate, subject: str) -> None:
        raise PreconditionError(f"session {self.session_id!r}: {_READ_ONLY}")

    async def heartbeat(self, actor: str, subject: str) -> int:
        self.last_used = time.monotonic()
        return 0  # a replay has no presence

    async def leave(self, actor: str, subject: str, intent_id: str = "") -> int:
        return 0

    @property
    def viewers(self) -> int:
        return len(self._subscribers) + sum(t.viewers for t in self.tracks.values())

    async def stop(self) -> None:
        self._generation += 1
        if self._driver is not None:
            self._driver.cancel()
            await asyncio.gather(self._driver, return_exceptions=True)
        for sub in list(self._subscribers):
            sub.close()
        for track in self.tracks.values():
            track.end("the replay was closed")


def check_speed(speed: float) -> None:
    """Refuse a replay speed outside :data:`MIN_SPEED` .. :data:`MAX_SPEED` (NaN too)."""
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise InvalidRequestError(
            f"replay speed {speed:g}: choose one from 1/16 to {MAX_SPEED:g} (1 = real time; "
            "pause to stop the clock)"
        )


def _saturate(t_ns: int) -> int:
    return min(max(t_ns, INT64_MIN), INT64_MAX)
