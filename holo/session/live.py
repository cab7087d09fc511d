"""One live session as a node serves it: its state, intents, presence and subscribers.

A :class:`LiveSession` folds the bus's durable log (``tail``) into its state and hands
every event, in log order, to its local subscribers; ephemeral values from the bus go to
pacers (:mod:`holo.session.fanout`). An intent is checked against the node's state and
appended with ``expected_seq`` = that state's seq: when another node appended first, the
node catches up, checks again and retries, so every node and client sees one order.

Presence: a participant is marked away after ``away_after_s`` without a sign of life (a
heartbeat, or its stream being read), and removed after ``remove_after_s``; every node
sweeps, and the log's compare-and-append keeps one "away" per silence. A node tells the
others who showed a sign of life on it in one bus message per heartbeat interval (an
``alive`` list), not one per stream: 500 observers streaming from one node were 250
publishes a second, and are now 0.5.

Participant ids are assigned by the server and bound to the token subject that first
joined with them, for good: nobody else can take an id (and its annotations) over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import holo.session.fanout as fanout  # fanout.TIMES is set at start; read it at use
from holo.audit import NO_AUDIT, Auditor
from holo.errors import (
    InvalidRequestError,
    PermissionDeniedError,
    SessionError,
    UnavailableError,
)
from holo.session.bus import Bus, SeqConflictError
from holo.session.clock import SessionClock
from holo.session.fanout import Pacer, Subscription
from holo.session.limits import SessionLimits
from holo.session.records import EphemeralUpdate, Participant, SessionInfo
from holo.session.served import Intent, Joined, Joiner
from holo.session.state import Event, EventData, SessionState, apply, check_intent

__all__ = ["AUDITED", "HubConfig", "LiveSession"]

logger = logging.getLogger(__name__)

#: Durable kinds written to the audit log when a participant causes them.
AUDITED = frozenset(
    {"joined", "left", "model_loaded", "control_requested", "control_granted", "control_revoked"}
)
_IDEMPOTENCY_WINDOW = 4096  # recent events searched for a retried intent's id


@dataclass
class HubConfig:
    """Presence, backlog and state limits (defaults suit headsets on hospital Wi-Fi)."""

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
    #: The same for observers (read-only, often hundreds): 15 Hz. Their timelines (the
    #: SDK's, the page's, the Unity package's) interpolate between the two values that
    #: bracket each video frame's moment, so fewer values cost no sync: against 30 fps
    #: video the drag shown is still that frame's (0 frames off, as at 30 Hz), and an
    #: observer costs half the bytes of 30 Hz (4,955 against 9,717-9,826 a second;
    #: benchmarks/README.md, session.py table 4). The presenter and experts, who act on
    #: what they see, keep ``ephemeral_interval_s``.
    observer_ephemeral_interval_s: float = 1 / 15
    #: A session this node serves is ended here when nobody is in it (every participant
    #: left or timed out), no stream of it is open here and nothing records it; after
    #: this long so (5 min: a headset rebooting after a lost link resumes well within it,
    #: a recording being stopped writes its last second in 1 s) the node drops what it
    #: holds of it (the decoded log, presence, subscribers) and, with an archive folder,
    #: archives its log and lets the bus drop it (holo.session.hub).
    evict_after_s: float = 300.0
    #: On a bus other nodes share (Redis), how long a session's keys stay after a node
    #: archived it (its log is then in that node's ``<data>/sessions``): another node may
    #: still serve it, and any append there lifts the expiry. A day outlasts any token
    #: (at most 24 h, holo.auth), so whoever could still append has done so by then.
    archive_keep_s: float = 24 * 3600.0
    #: The bounds of every field and collection of a session's state.
    limits: SessionLimits = field(default_factory=SessionLimits)


class LiveSession:
    """A live session on this node. Start with :meth:`start`; :meth:`stop` when done.

    Parameters
    ----------
    info
        The session's id, case and creation time.
    bus
        Where its log and ephemeral channel live (shared by the nodes that serve it).
    config
        Presence, backlog and pacing limits.
    clock
        The node's session clock.
    audit
        Receives joins, leaves, control changes and model loads.
    """

    read_only = False

    def __init__(
        self,
        info: SessionInfo,
        *,
        bus: Bus,
        config: HubConfig,
        clock: SessionClock,
        audit: Auditor = NO_AUDIT,
    ) -> None:
        self.info = info
        self.session_id = info.session_id
        self.case_id = info.case_id
        self.clock = clock
        self.config = config
        self._bus = bus
        self._audit = audit
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
        # Called on the loop with every durable event and ephemeral value this node sees,
        # after subscribers (the session recorder).
        self.taps: list[Callable[[Event | EphemeralUpdate], None]] = []
        # Ephemeral values are paced per group: observers, and everyone else.
        self._pacers = {
            "observer": Pacer(config.observer_ephemeral_interval_s),
            "": Pacer(config.ephemeral_interval_s),
        }
        # Participants that showed a sign of life here since the last ``alive`` message;
        # this node's own messages carry its id, so it does not take them back.
        self._alive_here: set[str] = set()
        # (token subject, role) -> the participant whose last stream on this node ended,
        # and when: a join without an id from them within ``remove_after_s`` gets it back.
        self._dropped: dict[tuple[str, str], tuple[str, float]] = {}
        self._node = secrets.token_hex(8)

    @property
    def heartbeat_interval_s(self) -> float:
        return self.config.heartbeat_interval_s

    async def start(self) -> None:
        for _, payload in await self._bus.read(self.session_id, 0):
            self._fold(Event.decode(payload))
        started = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._tail(), name=f"tail {self.session_id}"),
            asyncio.create_task(self._listen(started), name=f"ephemeral {self.session_id}"),
            asyncio.create_task(self._sweep(), name=f"presence {self.session_id}"),
            asyncio.create_task(self._announce(), name=f"alive {self.session_id}"),
        ]
        await asyncio.wait_for(started.wait(), 10)

    def ended(self) -> bool:
        """Nobody is in it, no stream of it is open here, nothing records it."""
        return not (self.state.participants or self.subscribers or self.taps)

    async def stop(self) -> None:
        for pacer in self._pacers.values():
            pacer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sub in list(self.subscribers):
            sub.close()

    # the log ----------------------------------------------------------------------------

    def _fold(self, event: Event) -> None:
        apply(self.state, event)
        self.events.append(event)
        if isinstance(event.data, Participant):
            self.owners.setdefault(event.data.participant_id, event.data.subject)
        if event.kind in ("joined", "back"):
            self.last_seen[event.participant_id()] = time.monotonic()
        elif event.kind == "left":  # last_seen holds participants only
            self.last_seen.pop(event.participant_id(), None)
        if fanout.TIMES is not None:
            fanout.TIMES.accepted(event, "event")
        for sub in list(self.subscribers):
            sub.push_event(event)
        self._tap(event)

    def _tap(self, item: Event | EphemeralUpdate) -> None:
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
                async for _seq, payload in self._bus.tail(self.session_id, self.state.seq):
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

    async def wait_seq(self, seq: int, timeout: float = 10.0) -> None:
        async with self._advanced:
            await asyncio.wait_for(self._advanced.wait_for(lambda: self.state.seq >= seq), timeout)

    async def append(
        self,
        actor: str,
        kind: str,
        data: EventData,
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
        clock says (0: now); see :meth:`SessionClock.stamp`.
        """
        if intent_id:
            self.config.limits.check_id(intent_id, "intent_id")
        async with self._appending:
            for _ in range(100):
                done = self._appended_already(actor, intent_id)
                if done:
                    return done
                state = self.state
                if check is None:
                    check_intent(state, actor, kind, data, self.config.limits)
                elif not check(state):
                    raise SessionError(f"{kind} for {actor} is no longer needed")
                expected = state.seq
                stamped = self.clock.stamp(t_ns)
                event = Event(expected + 1, stamped, actor, kind, data, intent_id)
                try:
                    seq = await self._bus.append(
                        self.session_id,
                        event.encode(),
                        expected_seq=expected,
                        case_id=self.case_id,
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
            if event.actor == actor and event.intent_id == intent_id:
                return event.seq
        return 0

    async def _audit_write(self, subject: str, action: str, **about: str) -> None:
        session = {"session_id": self.session_id}
        await self._audit.record(action, subject, self.case_id, **session, **about)

    # ephemeral values and presence --------------------------------------------------------

    async def _listen(self, started: asyncio.Event) -> None:
        # ``started`` is set by the bus once the subscription is in place (Redis confirmed
        # it): a value published after start() returns is heard.
        async for payload in self._bus.subscribe(self.session_id, ready=started):
            try:
                raw = json.loads(payload)
                if "alive" in raw:
                    self._on_alive(raw)
                else:
                    self._on_ephemeral(EphemeralUpdate.from_json(raw))
            except (ValueError, KeyError, TypeError):  # one bad value must not end the channel
                logger.warning("session %s: unreadable ephemeral value dropped", self.session_id)

    def _on_alive(self, raw: dict[str, object]) -> None:
        """Another node's participants that showed a sign of life there."""
        if raw.get("node") == self._node:
            return
        alive = raw["alive"]
        if not isinstance(alive, list):
            raise TypeError("alive is a list of participant ids")
        now = time.monotonic()
        for pid in alive:
            if pid in self.state.participants:  # last_seen holds participants only
                self.last_seen[pid] = now

    async def _announce(self) -> None:
        """Publish who showed a sign of life on this node, once per heartbeat interval."""
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_s)
            if not self._alive_here:
                continue
            alive, self._alive_here = sorted(self._alive_here), set()
            payload = {"alive": alive, "node": self._node}
            try:
                await self._bus.publish(self.session_id, json.dumps(payload).encode())
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the bus does not answer: the next interval tells
                self._alive_here.update(alive)
                logger.warning(
                    "session %s: publishing signs of life failed: %s", self.session_id, err
                )

    def _on_ephemeral(self, update: EphemeralUpdate) -> None:
        self.last_seen[update.participant_id] = time.monotonic()
        if update.channel == "heartbeat":
            return
        for pacer in self._pacers.values():
            pacer.add(update)
        self._tap(update)

    async def _publish(self, update: EphemeralUpdate) -> None:
        payload = json.dumps(update.to_json(), separators=(",", ":")).encode()
        await self._bus.publish(self.session_id, payload)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            try:
                await self._sweep_once()
            except asyncio.CancelledError:
                raise
            except UnavailableError as err:  # the bus is down: health says so; one line
                logger.warning("session %s: presence sweep waits: %s", self.session_id, err)
            except Exception:  # a bus hiccup must not end presence on this node for good
                logger.exception("session %s: presence sweep failed; retrying", self.session_id)

    async def _sweep_once(self) -> None:
        config = self.config
        for pid, participant in list(self.state.participants.items()):
            seen = self.last_seen.setdefault(pid, time.monotonic())
            if participant.present and time.monotonic() - seen > config.away_after_s:
                await self._presence(pid, "away", True, config.away_after_s)
            elif not participant.present and time.monotonic() - seen > config.remove_after_s:
                await self._presence(pid, "left", False, config.remove_after_s)

    async def _presence(self, pid: str, kind: str, present: bool, silent_s: float) -> None:
        """Mark ``pid`` away (or remove it), unless it spoke meanwhile or another node did."""
        known = self.state.participants.get(pid)
        subject = "" if known is None else known.subject

        def still_due(state: SessionState) -> bool:
            participant = state.participants.get(pid)
            quiet = time.monotonic() - self.last_seen.get(pid, 0.0) > silent_s
            return participant is not None and participant.present is present and quiet

        with contextlib.suppress(SessionError):
            await self.append(pid, kind, pid, check=still_due)
            if kind == "left":
                await self._audit_write(subject, "left", participant_id=pid, why="timeout")

    # subscribers ----------------------------------------------------------------------------

    def subscribe(
        self, participant_id: str, after_seq: int | None, role: str = ""
    ) -> tuple[Subscription, SessionState | None]:
        """Register a subscriber at the current seq (no await: nothing can slip between).

        ``after_seq`` None: a snapshot of the current state is returned and events after it
        follow. Otherwise the events after ``after_seq`` are queued first. ``role`` picks
        the ephemeral pacing (observers are paced apart).
        """
        config = self.config
        sub = Subscription(
            participant_id, config.max_backlog, lambda: self.state, self.clock.now_ns
        )
        snapshot = None
        if after_seq is None or after_seq < self.state.seq - config.max_backlog:
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

    # what participants do (ServedSession) ----------------------------------------------------

    async def join(self, joiner: Joiner) -> Joined:
        """Join or rejoin; the snapshot to start from is None when resuming (the events
        after ``joiner.resume_from_seq`` are queued)."""
        participant_id, role, subject = joiner.participant_id, joiner.role, joiner.subject
        resume_from_seq = joiner.resume_from_seq
        if resume_from_seq > self.state.seq:  # a node behind the client's: catch up first
            try:
                await self.wait_seq(resume_from_seq, timeout=5.0)
            except TimeoutError:
                raise InvalidRequestError(
                    f"resume_from_seq {resume_from_seq} is past the session's last event "
                    f"({self.state.seq}); join without it"
                ) from None
        limits = self.config.limits
        if participant_id:
            limits.check_id(participant_id, "participant_id")
        known = self.state.participants.get(participant_id) if participant_id else None
        owner = self.owners.get(participant_id) if participant_id else None
        if participant_id and owner is None:
            raise InvalidRequestError(
                f"participant id {participant_id!r} is unknown in this session; join without "
                "one (the server assigns it) and keep the id it returns"
            )
        if owner is not None and owner != subject:
            raise PermissionDeniedError(
                f"participant {participant_id!r} belongs to another user; join without an id"
            )
        if known is not None and known.role != role:
            raise PermissionDeniedError(
                f"participant {participant_id!r} joined as {known.role}; the token says {role}"
            )
        if not participant_id and resume_from_seq == 0:
            participant_id = self._take_dropped(subject, role)
            known = self.state.participants.get(participant_id) if participant_id else None
        pid = participant_id or f"p_{secrets.token_urlsafe(9)}"
        new = Participant(pid, role, joiner.display_name, subject)
        if known is None:  # refused before anything is held for it
            limits.check_join(self.state, new)
        sub, snapshot = self.subscribe(pid, None if resume_from_seq == 0 else resume_from_seq, role)
        self.last_seen[pid] = time.monotonic()
        try:
            if known is None:
                # Audited first: a join the audit log cannot record (a full disk) is refused
                # before anyone sees the participant, never left in the session as a ghost.
                await self._audit_write(subject, "joined", participant_id=pid, role=role)
                # Checked again on the latest state: another node may have filled the session.
                await self.append(pid, "joined", new, check=lambda s: limits.check_join(s, new))
            elif not known.present:
                await self.append(pid, "back", pid, check=lambda s: _is_away(s, pid))
        except BaseException:
            self.unsubscribe(sub)
            if known is None:
                self.last_seen.pop(pid, None)
            raise
        return Joined(sub, snapshot, self.clock.now_ns())

    def leave_stream(self, joined: Joined) -> None:
        sub = joined.subscription
        assert isinstance(sub, Subscription)
        self.unsubscribe(sub)
        sub.close()
        pid = sub.participant_id
        participant = self.state.participants.get(pid)
        if participant is not None and not self._streaming(pid):
            now = time.monotonic()
            for key, (_, ended) in list(self._dropped.items()):
                if now - ended > self.config.remove_after_s:
                    del self._dropped[key]
            self._dropped[(participant.subject, participant.role)] = (pid, now)

    def _streaming(self, pid: str) -> bool:
        return any(sub.participant_id == pid for sub in self.subscribers)

    def _take_dropped(self, subject: str, role: str) -> str:
        """The participant of ``subject`` and ``role`` whose stream ended on this node, if
        it is still in the session with no stream here: a client that lost its id and
        joins again is that participant, not a new one. A client looping Join without its
        id (78 joins a second were accepted) then adds no "joined" event and no audit line
        per loop. Not a limit on joins per token: one observer token shared by a lecture
        hall (``holo simulate --token``) still makes one participant per open stream.
        """
        pid, ended = self._dropped.pop((subject, role), ("", 0.0))
        participant = self.state.participants.get(pid)
        if (
            participant is None
            or participant.subject != subject
            or participant.role != role
            or time.monotonic() - ended > self.config.remove_after_s
            or self._streaming(pid)
        ):
            return ""
        return pid

    async def stream_alive(self, participant_id: str) -> None:
        """Its stream is read: a sign of life as good as a heartbeat (an overloaded headset
        may send its heartbeats late), told to every node with the next ``alive``."""
        self._alive(participant_id)

    def _alive(self, participant_id: str) -> None:
        self.last_seen[participant_id] = time.monotonic()
        self._alive_here.add(participant_id)

    def _own(self, actor: str, subject: str) -> None:
        participant = self.state.participants.get(
            self.config.limits.check_id(actor, "participant_id")
        )
        if participant is None:
            raise SessionError(f"participant {actor!r} is not in the session; join it first")
        if participant.subject != subject:
            raise PermissionDeniedError(f"participant {actor!r} belongs to another user")

    def check_may(self, actor: str, subject: str, kind: str, data: EventData) -> None:
        """Raise unless ``actor`` (``subject``'s) may cause a ``kind`` event now: for work
        done before the intent (a registration), which :meth:`intent` checks again."""
        self._own(actor, subject)
        check_intent(self.state, actor, kind, data, self.config.limits)

    async def intent(self, intent: Intent) -> int:
        actor, subject, kind, data = intent.actor, intent.subject, intent.kind, intent.data
        self._own(actor, subject)
        seq = await self.append(actor, kind, data, intent_id=intent.intent_id, t_ns=intent.t_ns)
        if kind in AUDITED:
            about = data if isinstance(data, str) else actor  # control changes: the target
            model_id = getattr(data, "model_id", "")
            await self._audit_write(subject, kind, participant_id=about, model_id=model_id)
        return seq

    async def ephemeral(self, update: EphemeralUpdate, subject: str) -> None:
        actor = update.participant_id
        self._own(actor, subject)
        check_intent(self.state, actor, update.channel, update.value, self.config.limits)
        await self._publish(replace(update, t_ns=self.clock.stamp(update.t_ns)))

    async def heartbeat(self, actor: str, subject: str) -> int:
        self._own(actor, subject)
        self._alive(actor)
        participant = self.state.participants.get(actor)
        if participant is not None and not participant.present:
            return await self.append(actor, "back", actor, check=lambda s: _is_away(s, actor))
        return 0

    async def leave(self, actor: str, subject: str, intent_id: str = "") -> int:
        retried = self._appended_already(actor, intent_id)
        if retried:
            return retried  # a retried Leave: the participant is gone already
        self._own(actor, subject)
        seq = await self.append(
            actor, "left", actor, check=lambda s: actor in s.participants, intent_id=intent_id
        )
        await self._audit_write(subject, "left", participant_id=actor, why="leave")
        return seq


def _is_away(state: SessionState, pid: str) -> bool:
    participant = state.participants.get(pid)
    return participant is not None and not participant.present
