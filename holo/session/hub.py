"""The session hub of one node: live sessions, their subscribers, intents and presence.

Each live session on a node folds the bus's durable log (``tail``) into its state and hands
every event, in log order, to its local subscribers; ephemeral values from the bus go to
the subscribers as latest-value slots. An intent is checked against the node's state and
appended with ``expected_seq`` = that state's seq: when another node appended first, the
node catches up, checks again and retries, so every node and client sees one order.

Slow subscribers: durable events wait in a bounded backlog; one that overflows is told to
resync (a snapshot replaces the backlog) instead of growing without bound. Ephemeral
values are gathered per session into one frame per pacing interval (the newest per
(participant, channel)), encoded once and handed to every subscriber; a subscriber that
has not sent the last frame yet gets it merged with the next, so stale values are never
sent and what it holds stays one frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from holo.errors import (
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    SessionError,
    UnavailableError,
)
from holo.session.bus import Bus, SeqConflictError
from holo.session.state import Event, SessionState, apply, check_intent

__all__ = ["EphemeralFrame", "HubConfig", "SessionClock", "SessionHub", "Subscription"]

logger = logging.getLogger(__name__)

AUDITED = frozenset(
    {"joined", "left", "model_loaded", "control_requested", "control_granted", "control_revoked"}
)
_BATCH = 64  # durable events per message at most
_IDEMPOTENCY_WINDOW = 4096  # recent events searched for a retried intent's id


#: How far an intent's own ``t_ns`` may lie behind / ahead of the session clock.
MAX_BACKDATE_NS = 1_000_000_000
MAX_AHEAD_NS = 100_000_000


@dataclass
class HubConfig:
    """Presence and backlog limits (defaults suit headsets on hospital Wi-Fi)."""

    heartbeat_interval_s: float = 2.0
    away_after_s: float = 6.0  # three missed heartbeats
    remove_after_s: float = 30.0
    sweep_interval_s: float = 0.5
    max_backlog: int = 2048  # durable events queued for one subscriber before a resync
    #: Ephemeral values go out at most this often per session (one frame of the newest per
    #: participant and channel, the same for every subscriber): headsets render at 60 Hz,
    #: and pacing turns the 4-6 sources of a busy session into one message per frame
    #: instead of one per update. A value that comes after a quiet interval goes at once.
    ephemeral_interval_s: float = 1 / 60
    #: The same for observers (read-only, often hundreds): 30 Hz, as spectators of shared
    #: scenes are commonly sent, halves the messages the crowd costs the node; the
    #: presenter and experts, who act on what they see, keep ``ephemeral_interval_s``.
    observer_ephemeral_interval_s: float = 1 / 30


class SessionClock:
    """The session clock of this node: wall time anchored once, then monotonic
    (ARCHITECTURE.md, "Clock"): never goes backwards, ignores later wall-clock steps."""

    def __init__(self) -> None:
        self._wall0 = time.time_ns()
        self._mono0 = time.monotonic_ns()

    def now_ns(self) -> int:
        return self._wall0 + (time.monotonic_ns() - self._mono0)


class EphemeralFrame:
    """The ephemeral values of one pacing interval of a session, the newest per (participant,
    channel): built once and sent to every subscriber. ``wire`` is a slot for the servicer's
    encoding of it, so it is serialised once, not once per subscriber."""

    __slots__ = ("updates", "wire")

    def __init__(self, updates: list[dict[str, Any]]) -> None:
        self.updates = updates
        self.wire: Any = None

    def merged(self, newer: EphemeralFrame) -> EphemeralFrame:
        """One frame with the newest value of every slot of both (a subscriber that has not
        taken this one yet gets that instead of two)."""
        slots = {(u["participant_id"], u["channel"]): u for u in self.updates}
        slots.update({(u["participant_id"], u["channel"]): u for u in newer.updates})
        return EphemeralFrame(list(slots.values()))


class _Pacer:
    """Gathers a session's ephemeral values into one :class:`EphemeralFrame` per interval
    for a group of subscribers: the first value after a quiet interval goes at once, later
    ones wait for the interval's end (newest per slot)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.subscribers: set[Subscription] = set()
        self._pending: dict[tuple[str, str], dict[str, Any]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._flushed = 0.0  # loop time of the last frame

    def add(self, update: dict[str, Any]) -> None:
        if not self.subscribers:
            return
        self._pending[(update["participant_id"], update["channel"])] = update
        if self._timer is None:
            loop = asyncio.get_running_loop()
            due = max(self._flushed + self.interval_s, loop.time())
            self._timer = loop.call_at(due, self._flush)

    def _flush(self) -> None:
        self._timer = None
        self._flushed = asyncio.get_running_loop().time()
        frame = EphemeralFrame(list(self._pending.values()))
        self._pending.clear()
        for sub in self.subscribers:
            sub.push_ephemeral(frame)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Subscription:
    """One joined stream: a bounded backlog of durable events plus the newest ephemeral
    values not yet sent (one :class:`EphemeralFrame`, shared with the other subscribers
    while this one keeps up, merged for it alone when it does not)."""

    def __init__(
        self,
        participant_id: str,
        max_backlog: int,
        current: Callable[[], SessionState],
    ) -> None:
        self.participant_id = participant_id
        self._events: deque[Event] = deque()
        self._frame: EphemeralFrame | None = None
        self._max = max_backlog
        self._current = current  # the live state, copied when a resync is sent
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
            self._events.clear()
            self._resync = True
        else:
            self._events.append(event)
        self._wake.set()

    def push_ephemeral(self, frame: EphemeralFrame) -> None:
        self._frame = frame if self._frame is None else self._frame.merged(frame)
        self._wake.set()

    def memory_bytes(self) -> int:
        """A rough count of what this subscriber holds (events, slots, a pending snapshot)."""
        held = sum(sys.getsizeof(e.data) + 200 for e in self._events)
        if self._frame is not None:
            held += 400 * len(self._frame.updates)
        return held

    async def next(self) -> tuple[str, Any]:
        """``("resync", state)``, ``("events", [Event, ...])`` (consecutive, in order) or
        ``("ephemeral", EphemeralFrame)`` (the newest value of every slot that changed)."""
        while True:
            if self.closed:
                raise SessionError("the subscription was closed")
            if self._resync:
                self._resync = False
                return "resync", self._current().copy()
            if self._events:  # what waits, up to a batch: fewer, larger messages
                batch = [self._events.popleft() for _ in range(min(_BATCH, len(self._events)))]
                return "events", batch
            if self._frame is not None:
                frame, self._frame = self._frame, None
                return "ephemeral", frame
            self._wake.clear()
            await self._wake.wait()

    def close(self) -> None:
        self.closed = True
        self._wake.set()


class LiveSession:
    """A session as one node serves it."""

    def __init__(self, hub: SessionHub, record: dict[str, Any]) -> None:
        self.hub = hub
        self.session_id: str = record["session_id"]
        self.case_id: str = record["case_id"]
        self.created_t_ns: int = record["created_t_ns"]
        self.state = SessionState()
        self.events: list[Event] = []
        self.subscribers: set[Subscription] = set()
        self.last_seen: dict[str, float] = {}
        # participant id -> the token subject that first joined with it; kept after the
        # participant leaves, so nobody else can take the id (and its annotations) over.
        self.owners: dict[str, str] = {}
        self._advanced = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        # One append in flight per node and session: local intents queue here instead of
        # racing each other on the same expected seq (conflicts are then only cross-node).
        self._appending = asyncio.Lock()
        # Called on the loop with every durable event (an Event) and ephemeral value (a
        # dict) this node sees, after subscribers (the session recorder).
        self.taps: list[Callable[[Event | dict[str, Any]], None]] = []
        # Ephemeral values are paced per group: observers, and everyone else.
        config = hub.config
        self._pacers = {
            "observer": _Pacer(config.observer_ephemeral_interval_s),
            "": _Pacer(config.ephemeral_interval_s),
        }

    def info(self) -> dict[str, Any]:
        """What identifies the session (its id, case and creation time)."""
        return {
            "session_id": self.session_id,
            "case_id": self.case_id,
            "created_t_ns": self.created_t_ns,
        }

    async def start(self) -> None:
        bus = self.hub.bus
        for _, payload in await bus.read(self.session_id, 0):
            self._fold(Event.decode(payload))
        started = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._tail(), name=f"tail {self.session_id}"),
            asyncio.create_task(self._listen(started), name=f"ephemeral {self.session_id}"),
            asyncio.create_task(self._sweep(), name=f"presence {self.session_id}"),
        ]
        await asyncio.wait_for(started.wait(), 10)

    def _fold(self, event: Event) -> None:
        apply(self.state, event)
        self.events.append(event)
        if event.kind == "joined":
            participant = event.data["participant"]
            self.owners.setdefault(participant["participant_id"], participant["subject"])
        if event.kind in ("joined", "back"):
            pid = event.data.get("participant", {}).get("participant_id") or event.data.get(
                "participant_id", ""
            )
            self.last_seen[pid] = time.monotonic()
        for sub in list(self.subscribers):
            sub.push_event(event)
        self._tap(event)

    def _tap(self, item: Event | dict[str, Any]) -> None:
        for tap in self.taps:
            try:
                tap(item)
            except Exception:
                logger.exception("session %s: a tap failed", self.session_id)

    async def _tail(self) -> None:
        """Fold the log as it grows; if reading fails, start again from the state's seq
        (a node must not go on serving a session it no longer follows)."""
        backoff = 0.05
        while True:
            try:
                async for _seq, payload in self.hub.bus.tail(self.session_id, self.state.seq):
                    self._fold(Event.decode(payload))
                    backoff = 0.05
                    async with self._advanced:
                        self._advanced.notify_all()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception(
                    "session %s: reading the log failed at seq %d; reading on",
                    self.session_id,
                    self.state.seq,
                )
            await asyncio.sleep(backoff)
            backoff = min(2 * backoff, 2.0)

    async def _listen(self, started: asyncio.Event) -> None:
        stream = self.hub.bus.subscribe(self.session_id)
        # Subscribing happens on the first step; mark started only once it is in place.
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0)
        started.set()
        payload = await first
        while True:
            try:
                self._on_ephemeral(json.loads(payload))
            except (ValueError, KeyError, TypeError):  # one bad value must not end the channel
                logger.warning("session %s: unreadable ephemeral value dropped", self.session_id)
            payload = await stream.__anext__()

    def _on_ephemeral(self, update: dict[str, Any]) -> None:
        self.last_seen[update["participant_id"]] = time.monotonic()
        if update["channel"] == "heartbeat":
            return
        for pacer in self._pacers.values():
            pacer.add(update)
        self._tap(update)

    async def _sweep(self) -> None:
        config = self.hub.config
        while True:
            await asyncio.sleep(config.sweep_interval_s)
            try:
                await self._sweep_once(config)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bus hiccup must not end presence on this node for good
                logger.exception("session %s: presence sweep failed; retrying", self.session_id)

    async def _sweep_once(self, config: HubConfig) -> None:
        for pid, participant in list(self.state.participants.items()):
            seen = self.last_seen.setdefault(pid, time.monotonic())
            if participant["present"] and time.monotonic() - seen > config.away_after_s:
                await self._presence(pid, "away", True, config.away_after_s)
            elif not participant["present"] and time.monotonic() - seen > config.remove_after_s:
                await self._presence(pid, "left", False, config.remove_after_s)

    async def _presence(self, pid: str, kind: str, present: bool, silent_s: float) -> None:
        """Mark ``pid`` away (or remove it), unless it spoke meanwhile or another node did."""
        subject = self.state.participants.get(pid, {}).get("subject", "")

        def still_due(state: SessionState) -> bool:
            participant = state.participants.get(pid)
            quiet = time.monotonic() - self.last_seen.get(pid, 0.0) > silent_s
            return participant is not None and participant["present"] is present and quiet

        with contextlib.suppress(SessionError):
            await self.append(pid, kind, {"participant_id": pid}, check=still_due)
            if kind == "left":
                self.hub.write_audit(
                    self, subject, "left", {"participant_id": pid, "why": "timeout"}
                )

    async def wait_seq(self, seq: int, timeout: float = 10.0) -> None:
        async with self._advanced:
            await asyncio.wait_for(self._advanced.wait_for(lambda: self.state.seq >= seq), timeout)

    async def append(
        self,
        actor: str,
        kind: str,
        data: dict[str, Any],
        *,
        check: Callable[[SessionState], bool] | None = None,
        intent_id: str = "",
        t_ns: int = 0,
    ) -> int:
        """Check the intent against the latest state and append it; retry on conflicts.

        ``check`` replaces the role rules (presence events): when it is false the event is
        no longer needed and SessionError is raised. ``intent_id`` (the client's) makes a
        retried intent idempotent: one already in the recent log returns its seq.
        ``t_ns`` is when it happened on the session clock, as a client that synced its
        clock says (0: now); see :meth:`SessionHub.event_time`.
        """
        if len(intent_id) > 128:
            raise InvalidRequestError("intent_id is at most 128 characters")
        if intent_id:
            data = {**data, "intent_id": intent_id}
        async with self._appending:
            for _ in range(100):
                done = self._appended_already(actor, intent_id)
                if done:
                    return done
                state = self.state
                if check is None:
                    check_intent(state, actor, kind, data)
                elif not check(state):
                    raise SessionError(f"{kind} for {actor} is no longer needed")
                expected = state.seq
                event = Event(expected + 1, self.hub.event_time(t_ns), actor, kind, data)
                try:
                    seq = await self.hub.bus.append(
                        self.session_id, event.encode(), expected_seq=expected
                    )
                except SeqConflictError as conflict:
                    conflict_at = conflict.actual
                except (SessionError, asyncio.CancelledError):
                    raise
                except Exception as err:  # the bus does not answer (Redis down)
                    logger.warning("session %s: append failed: %s", self.session_id, err)
                    raise UnavailableError(
                        f"session {self.session_id}: the session bus does not answer; "
                        "try again shortly"
                    ) from err
                else:
                    await self.wait_seq(seq)
                    return seq
                # The log moved on: catch up, then check again.
                await self.wait_seq(conflict_at)
                if self.events[expected].encode() == event.encode():
                    return expected + 1  # ours landed; only the reply was lost (RedisBus)
        raise SessionError(f"session {self.session_id}: too many concurrent changes; try again")

    def _appended_already(self, actor: str, intent_id: str) -> int:
        """The seq of ``actor``'s intent ``intent_id`` in the recent log, or 0."""
        if not intent_id:
            return 0
        for event in reversed(self.events[-_IDEMPOTENCY_WINDOW:]):
            if event.actor == actor and event.data.get("intent_id") == intent_id:
                return event.seq
        return 0

    def subscribe(
        self, participant_id: str, after_seq: int | None, role: str = ""
    ) -> tuple[Subscription, SessionState | None]:
        """Register a subscriber at the current seq (no await: nothing can slip between).

        ``after_seq`` None: a snapshot of the current state is returned and events after it
        follow. Otherwise the events after ``after_seq`` are queued first. ``role`` picks
        the ephemeral pacing (observers are paced apart).
        """
        config = self.hub.config
        sub = Subscription(participant_id, config.max_backlog, lambda: self.state)
        snapshot = None
        if after_seq is None or after_seq < self.state.seq - self.hub.config.max_backlog:
            snapshot = self.state.copy()
        else:
            for event in self.events[after_seq:]:
                sub.push_event(event)
        self.subscribers.add(sub)
        self._pacers["observer" if role == "observer" else ""].subscribers.add(sub)
        return sub, snapshot

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)
        for pacer in self._pacers.values():
            pacer.subscribers.discard(sub)

    async def stop(self) -> None:
        for pacer in self._pacers.values():
            pacer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sub in list(self.subscribers):
            sub.close()


class SessionHub:
    """All sessions this node serves. ``audit`` receives one JSON-able record per audited
    action (joins, leaves, control changes, model loads), with the token's subject."""

    def __init__(
        self,
        bus: Bus,
        *,
        config: HubConfig | None = None,
        audit: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.bus = bus
        self.config = config or HubConfig()
        self.clock = SessionClock()
        self._audit = audit
        self._live: dict[str, LiveSession] = {}
        self._starting: dict[str, asyncio.Task[LiveSession]] = {}

    def write_audit(
        self, live: LiveSession, subject: str, action: str, detail: dict[str, Any]
    ) -> None:
        if self._audit is not None:
            self._audit(
                {
                    "t_ns": self.clock.now_ns(),
                    "session_id": live.session_id,
                    "case_id": live.case_id,
                    "subject": subject,
                    "action": action,
                    **detail,
                }
            )

    async def create_session(self, case_id: str) -> dict[str, Any]:
        """The case's session, created when it has none."""
        existing = await self.bus.find_session(case_id)
        if existing is None:
            session_id = f"ses_{secrets.token_urlsafe(12)}"
            existing = await self.bus.claim_case(case_id, session_id)
            if existing == session_id:
                record = {
                    "session_id": session_id,
                    "case_id": case_id,
                    "created_t_ns": self.clock.now_ns(),
                }
                await self.bus.put_session(session_id, json.dumps(record).encode())
        return await self.info(existing)

    async def info(self, session_id: str) -> dict[str, Any]:
        return (await self.get(session_id)).info()

    def live(self, session_id: str) -> LiveSession | None:
        """The session if this node serves it already (no bus read)."""
        return self._live.get(session_id)

    async def get(self, session_id: str) -> LiveSession:
        live = self._live.get(session_id)
        if live is not None:
            return live
        task = self._starting.get(session_id)
        if task is None:
            task = asyncio.ensure_future(self._start(session_id))
            self._starting[session_id] = task
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._starting.pop(session_id, None)

    async def _start(self, session_id: str) -> LiveSession:
        raw = await self.bus.get_session(session_id) if session_id else None
        if raw is None:
            raise NotFoundError("session", session_id)
        live = LiveSession(self, json.loads(raw))
        await live.start()
        self._live[session_id] = live
        return live

    async def join(
        self,
        session_id: str,
        *,
        participant_id: str,
        role: str,
        subject: str,
        display_name: str,
        resume_from_seq: int,
    ) -> tuple[LiveSession, Subscription, SessionState | None]:
        """Join or rejoin; returns the live session, the subscription and the snapshot to
        start from (None when resuming: the events after ``resume_from_seq`` are queued)."""
        live = await self.get(session_id)
        if resume_from_seq > live.state.seq:  # a node behind the client's: catch up first
            try:
                await live.wait_seq(resume_from_seq, timeout=5.0)
            except TimeoutError:
                raise InvalidRequestError(
                    f"resume_from_seq {resume_from_seq} is past the session's last event "
                    f"({live.state.seq}); join without it"
                ) from None
        known = live.state.participants.get(participant_id) if participant_id else None
        owner = live.owners.get(participant_id) if participant_id else None
        if participant_id and owner is None:
            raise InvalidRequestError(
                f"participant id {participant_id!r} is unknown in this session; join without "
                "one (the server assigns it) and keep the id it returns"
            )
        if owner is not None and owner != subject:
            raise PermissionDeniedError(
                f"participant {participant_id!r} belongs to another user; join without an id"
            )
        if known is not None and known["role"] != role:
            raise PermissionDeniedError(
                f"participant {participant_id!r} joined as {known['role']}; the token says {role}"
            )
        pid = participant_id or f"p_{secrets.token_urlsafe(9)}"
        sub, snapshot = live.subscribe(pid, None if resume_from_seq == 0 else resume_from_seq, role)
        live.last_seen[pid] = time.monotonic()
        try:
            if known is None:
                participant = {
                    "participant_id": pid,
                    "role": role,
                    "display_name": display_name[:100],
                    "subject": subject,
                    "present": True,
                }
                await live.append(
                    pid,
                    "joined",
                    {"participant": participant},
                    check=lambda s: pid not in s.participants,
                )
                self.write_audit(live, subject, "joined", {"participant_id": pid, "role": role})
            elif not known["present"]:
                await live.append(
                    pid,
                    "back",
                    {"participant_id": pid},
                    check=lambda s: _is_away(s, pid),
                )
        except BaseException:
            live.unsubscribe(sub)
            raise
        return live, sub, snapshot

    def leave_stream(self, live: LiveSession, sub: Subscription) -> None:
        """The stream ended (client gone): stop delivering; presence decides the rest."""
        live.unsubscribe(sub)
        sub.close()

    async def intent(
        self,
        session_id: str,
        actor: str,
        subject: str,
        kind: str,
        data: dict[str, Any],
        intent_id: str = "",
        t_ns: int = 0,
    ) -> int:
        """A durable intent; returns its seq (the same seq again for a retried intent_id)."""
        live = await self.get(session_id)
        self._own(live, actor, subject)
        seq = await live.append(actor, kind, data, intent_id=intent_id, t_ns=t_ns)
        if kind in AUDITED:
            self.write_audit(live, subject, kind, {"participant_id": actor, **_brief(data)})
        return seq

    async def ephemeral(
        self,
        session_id: str,
        actor: str,
        subject: str,
        channel: str,
        value: dict[str, Any],
        t_ns: int,
    ) -> None:
        live = await self.get(session_id)
        self._own(live, actor, subject)
        check_intent(live.state, actor, channel, value)
        await self._publish(session_id, actor, channel, value, self.event_time(t_ns))

    def event_time(self, t_ns: int) -> int:
        """The session time of an intent: the client's ``t_ns`` (it synced its clock with
        ClockService), or now when 0. A time more than :data:`MAX_BACKDATE_NS` old or
        :data:`MAX_AHEAD_NS` ahead is refused: viewers that show video
        :data:`MAX_BACKDATE_NS` late (their jitter buffer) must already hold every event of
        the frames they render."""
        now = self.clock.now_ns()
        if not t_ns:
            return now
        if not now - MAX_BACKDATE_NS <= t_ns <= now + MAX_AHEAD_NS:
            raise InvalidRequestError(
                f"t_ns {t_ns} is {(t_ns - now) / 1e6:+.0f} ms from the session clock; sync the "
                "client's clock (ClockService.Sync) or send 0 to let the server stamp it"
            )
        return t_ns

    async def _publish(
        self, session_id: str, actor: str, channel: str, value: dict[str, Any], t_ns: int
    ) -> None:
        update = {"participant_id": actor, "channel": channel, "t_ns": t_ns, "value": value}
        await self.bus.publish(session_id, json.dumps(update, separators=(",", ":")).encode())

    async def alive(self, session_id: str, participant_id: str) -> None:
        """Record that ``participant_id`` is alive on every node (its stream is read),
        without an intent: no role check, no event unless it was away."""
        live = await self.get(session_id)
        live.last_seen[participant_id] = time.monotonic()
        await self._publish(session_id, participant_id, "heartbeat", {}, 0)

    async def heartbeat(self, session_id: str, actor: str, subject: str) -> int:
        live = await self.get(session_id)
        self._own(live, actor, subject)
        await self.alive(session_id, actor)
        participant = live.state.participants.get(actor)
        if participant is not None and not participant["present"]:
            return await live.append(
                actor,
                "back",
                {"participant_id": actor},
                check=lambda s: _is_away(s, actor),
            )
        return 0

    async def leave(self, session_id: str, actor: str, subject: str, intent_id: str = "") -> int:
        live = await self.get(session_id)
        retried = live._appended_already(actor, intent_id)
        if retried:
            return retried  # a retried Leave: the participant is gone already
        self._own(live, actor, subject)
        seq = await live.append(
            actor,
            "left",
            {"participant_id": actor},
            check=lambda s: actor in s.participants,
            intent_id=intent_id,
        )
        self.write_audit(live, subject, "left", {"participant_id": actor, "why": "leave"})
        return seq

    @staticmethod
    def _own(live: LiveSession, actor: str, subject: str) -> None:
        participant = live.state.participants.get(actor)
        if participant is None:
            raise SessionError(f"participant {actor!r} is not in the session; join it first")
        if participant["subject"] != subject:
            raise PermissionDeniedError(f"participant {actor!r} belongs to another user")

    async def close(self) -> None:
        for live in list(self._live.values()):
            await live.stop()
        self._live.clear()


def _is_away(state: SessionState, pid: str) -> bool:
    participant = state.participants.get(pid)
    return participant is not None and not participant["present"]


def _brief(data: dict[str, Any]) -> dict[str, Any]:
    """What an audit record keeps of an event's data (ids, not geometry)."""
    return {k: v for k, v in data.items() if k in ("model_id", "participant_id")}
