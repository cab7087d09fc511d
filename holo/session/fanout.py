"""Fan-out of one session to its subscribers: ordered durable events, paced ephemeral values.

Each joined stream is a :class:`Subscription`: durable events wait in a bounded backlog;
one that overflows is told to resync (a snapshot of the state as it is then replaces the
backlog) instead of growing without bound. Ephemeral values are gathered per session into
one :class:`EphemeralFrame` per pacing interval (the newest per (participant, channel)) by
a :class:`Pacer` and handed to every subscriber; a subscriber that has not taken the last
frame yet gets it merged with the next, so stale values are never sent and what it holds
stays one frame.

What a subscriber yields is typed (:data:`SubscriptionItem`): an :class:`EventBatch`, an
:class:`EphemeralFrame` or a :class:`Resync`. A replay's viewers
(:class:`holo.recording.replay.ReplaySubscription`) yield the same, so one stream serves both.

:data:`TIMES` is a benchmark's instrument, off (None) unless the server process starts with
``HOLO_FANOUT_TIMES=FILE``: then each durable event (from its fold on this node) and each
ephemeral frame (from the pacer building it) is timed to the write of the last subscriber's
message carrying it, and the times go to ``FILE``. Off, it costs one ``is None`` test per
event, frame and message.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from holo import metrics
from holo.errors import SessionError
from holo.session.records import EphemeralUpdate
from holo.session.state import Event, SessionState

__all__ = [
    "TIMES",
    "EphemeralFrame",
    "EventBatch",
    "FanoutTimes",
    "Pacer",
    "Resync",
    "Subscriber",
    "Subscription",
    "SubscriptionItem",
]

BATCH = 64  # durable events per message at most
BEHIND = "you fell too far behind; start again from this snapshot"


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Consecutive durable events, in seq order."""

    events: list[Event]


@dataclass(frozen=True, slots=True)
class Resync:
    """Start again from ``state`` (as of session time ``t_ns``); the events after it follow."""

    state: SessionState
    t_ns: int
    reason: str


class EphemeralFrame:
    """The ephemeral values of one pacing interval of a session, the newest per (participant,
    channel): built once and sent to every subscriber (the transport encodes it once).
    ``origin``: the pacer's frame whose newest values a merged frame carries (itself when
    not merged), which :data:`TIMES` times."""

    __slots__ = ("_origin", "updates")

    def __init__(
        self, updates: list[EphemeralUpdate], origin: EphemeralFrame | None = None
    ) -> None:
        self.updates = updates
        # None for "itself": a frame referring to itself would be a reference cycle, freed
        # only by a full collection, which holo.quietgc runs every 15 min (frames of every
        # session piled up meanwhile: about 3,000 frames, 1 MB, a minute in benchmarks/soak.py).
        self._origin = origin

    @property
    def origin(self) -> EphemeralFrame:
        return self if self._origin is None else self._origin

    def merged(self, newer: EphemeralFrame) -> EphemeralFrame:
        """One frame with the newest value of every slot of both (a subscriber that has not
        taken this one yet gets that instead of two)."""
        slots = {(u.participant_id, u.channel): u for u in self.updates}
        slots.update({(u.participant_id, u.channel): u for u in newer.updates})
        return EphemeralFrame(list(slots.values()), newer.origin)


SubscriptionItem = EventBatch | EphemeralFrame | Resync


class FanoutTimes:
    """Server-side fan-out time: from an item's acceptance on this node (a durable event's
    fold, an ephemeral frame's making) to the write of its last subscriber's message.

    Items are told apart by identity (one :class:`~holo.session.state.Event` or pacer frame
    object is pushed to every subscriber). An item is closed ``settle_s`` after it was
    accepted (a subscriber that has not written it by then has skipped it: a merged frame,
    a resync); closed items are appended to ``path`` once a second as lines of
    ``KIND ACCEPTED_UNIX_NS MILLISECONDS``, ``KIND`` ``event`` or ``frame``.
    """

    def __init__(self, path: str, settle_s: float = 2.0) -> None:
        self.path = path
        self.settle_ns = int(settle_s * 1e9)
        self._open: dict[int, _Timed] = {}  # id(item) -> its times
        self._flushed = time.perf_counter_ns()

    def accepted(self, item: object, kind: str) -> None:
        self._open[id(item)] = _Timed(item, kind)

    def written(self, item: SubscriptionItem) -> None:
        """The stream messages of ``item`` for one subscriber have been written."""
        now = time.perf_counter_ns()
        if isinstance(item, EphemeralFrame):
            items: list[object] = [item.origin]
        elif isinstance(item, EventBatch):
            items = list(item.events)
        else:
            return
        for one in items:
            timed = self._open.get(id(one))
            if timed is not None and timed.item is one:
                timed.last_written = now
        if now - self._flushed > 1_000_000_000:
            self._flush(now)

    def _flush(self, now: int) -> None:
        self._flushed = now
        lines = []
        for key, timed in list(self._open.items()):
            if now - timed.accepted > self.settle_ns:
                del self._open[key]
                if timed.last_written:
                    ms = (timed.last_written - timed.accepted) / 1e6
                    lines.append(f"{timed.kind} {timed.accepted_unix} {ms:.3f}\n")
        with open(self.path, "a") as f:  # a few lines a second, only when measuring
            f.writelines(lines)


class _Timed:
    __slots__ = ("accepted", "accepted_unix", "item", "kind", "last_written")

    def __init__(self, item: object, kind: str) -> None:
        self.item = item  # kept, so its id is not reused while it is timed
        self.kind = kind
        self.accepted = time.perf_counter_ns()
        self.accepted_unix = time.time_ns()
        self.last_written = 0


#: The fan-out timer of this process: None (off) unless ``HOLO_FANOUT_TIMES`` names a file.
TIMES: FanoutTimes | None = (
    FanoutTimes(os.environ["HOLO_FANOUT_TIMES"]) if os.environ.get("HOLO_FANOUT_TIMES") else None
)


class Subscriber(Protocol):
    """One stream of a session, live or replayed."""

    participant_id: str

    async def next(self) -> SubscriptionItem:
        """What to send next; raises :class:`~holo.errors.SessionError` once closed."""
        ...


class Pacer:
    """Gathers a session's ephemeral values into one :class:`EphemeralFrame` per interval
    for a group of subscribers: the first value after a quiet interval goes at once, later
    ones wait for the interval's end (newest per slot)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.subscribers: set[Subscription] = set()
        self._pending: dict[tuple[str, str], EphemeralUpdate] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._flushed = 0.0  # loop time of the last frame

    def add(self, update: EphemeralUpdate) -> None:
        if not self.subscribers:
            return
        self._pending[(update.participant_id, update.channel)] = update
        if self._timer is None:
            loop = asyncio.get_running_loop()
            due = max(self._flushed + self.interval_s, loop.time())
            self._timer = loop.call_at(due, self._flush)

    def _flush(self) -> None:
        self._timer = None
        self._flushed = asyncio.get_running_loop().time()
        frame = EphemeralFrame(list(self._pending.values()))
        self._pending.clear()
        if TIMES is not None:
            TIMES.accepted(frame, "frame")
        for sub in self.subscribers:
            sub.push_ephemeral(frame)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Subscription:
    """One joined stream of a live session: a bounded backlog of durable events plus the
    newest ephemeral values not yet sent (one :class:`EphemeralFrame`, shared with the other
    subscribers while this one keeps up, merged for it alone when it does not).

    ``current`` returns the live state and ``now_ns`` the session clock: a resync copies
    the state when it is sent, not when it was decided.
    """

    def __init__(
        self,
        participant_id: str,
        max_backlog: int,
        current: Callable[[], SessionState],
        now_ns: Callable[[], int],
    ) -> None:
        self.participant_id = participant_id
        # Each event with when it reached the node (monotonic s), for the fan-out lag.
        self._events: deque[tuple[Event, float]] = deque()
        self._frame: EphemeralFrame | None = None
        self._max = max_backlog
        self._current = current
        self._now_ns = now_ns
        self._resync = False
        self._wake = asyncio.Event()
        self.resyncs = 0
        self.closed = False

    def push_event(self, event: Event) -> None:
        if self._resync or len(self._events) >= self._max:
            # Too far behind: the backlog goes; the next message is a snapshot of the state
            # as it is then (copied once, when sent), and events after it follow.
            if not self._resync:
                self.resyncs += 1
                metrics.SESSION_RESYNCS.inc()
            self._events.clear()
            self._resync = True
        else:
            self._events.append((event, time.monotonic()))
        self._wake.set()

    def push_ephemeral(self, frame: EphemeralFrame) -> None:
        self._frame = frame if self._frame is None else self._frame.merged(frame)
        self._wake.set()

    def memory_bytes(self) -> int:
        """A rough count of what this subscriber holds (events, slots, a pending snapshot)."""
        held = sum(sys.getsizeof(e.data) + 200 for e, _ in self._events)
        if self._frame is not None:
            held += 400 * len(self._frame.updates)
        return held

    async def next(self) -> SubscriptionItem:
        """A :class:`Resync`, an :class:`EventBatch` (consecutive, in order, up to
        :data:`BATCH`) or an :class:`EphemeralFrame` (the newest value of every slot that
        changed)."""
        while True:
            if self.closed:
                raise SessionError("the subscription was closed")
            if self._resync:
                self._resync = False
                return Resync(self._current().copy(), self._now_ns(), BEHIND)
            if self._events:  # what waits, up to a batch: fewer, larger messages
                # One observation per message, of its oldest event (the batch's worst lag):
                # one per event would cost a lock per event per subscriber.
                metrics.FANOUT_LAG.observe(time.monotonic() - self._events[0][1])
                batch = [self._events.popleft()[0] for _ in range(min(BATCH, len(self._events)))]
                return EventBatch(batch)
            if self._frame is not None:
                frame, self._frame = self._frame, None
                return frame
            self._wake.clear()
            await self._wake.wait()

    def close(self) -> None:
        self.closed = True
        self._wake.set()
