"""A session as its participants are served it: the one interface of live and replayed ones.

A session id resolves once (:meth:`holo.server.access.Access.session`) to a
:class:`ServedSession`: a :class:`holo.session.live.LiveSession` or a
:class:`holo.recording.replay.ReplaySession`. The services then use only this interface,
so nothing branches on what kind of session an id names: a replay answers joins with its
recorded state, refuses intents as read-only, and has no presence of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from holo.session.clock import Clock
from holo.session.fanout import Subscriber
from holo.session.records import EphemeralUpdate, SessionInfo
from holo.session.state import EventData, SessionState

__all__ = ["Intent", "Joined", "Joiner", "ServedSession"]


@dataclass(frozen=True, slots=True)
class Joiner:
    """Who joins: the participant id to resume (empty: a new participant), the token's
    role and subject, a display name, and the seq to resume after (0: from a snapshot)."""

    participant_id: str
    role: str
    subject: str
    display_name: str = ""
    resume_from_seq: int = 0


@dataclass(frozen=True, slots=True)
class Intent:
    """What a participant asks for: a durable ``kind`` event with ``data``, by ``actor``
    (its participant id) holding a token of ``subject``; ``intent_id`` (the client's)
    makes a retry idempotent; ``t_ns`` is when it happened on the session clock (0: now)."""

    actor: str
    subject: str
    kind: str
    data: EventData
    intent_id: str = ""
    t_ns: int = 0


@dataclass(frozen=True, slots=True)
class Joined:
    """A joined stream: its subscription and the state it starts from (None when resuming:
    the events after ``resume_from_seq`` are queued), as of session time ``t_ns``."""

    subscription: Subscriber
    snapshot: SessionState | None
    t_ns: int


class ServedSession(Protocol):
    """What the session, clock and video services need of a session."""

    @property
    def info(self) -> SessionInfo: ...

    @property
    def read_only(self) -> bool:
        """True for a replay: intents are refused, presence is not kept."""
        ...

    @property
    def clock(self) -> Clock: ...

    @property
    def heartbeat_interval_s(self) -> float:
        """How often a quiet client should say it is alive."""
        ...

    async def join(self, joiner: Joiner) -> Joined:
        """Join, or rejoin as ``joiner.participant_id``."""
        ...

    async def stream_alive(self, participant_id: str) -> None:
        """The participant's stream is being read: as good as a heartbeat (called about
        once per ``heartbeat_interval_s`` while it is)."""
        ...

    def leave_stream(self, joined: Joined) -> None:
        """The stream ended (client gone): stop delivering; presence decides the rest."""
        ...

    def check_may(self, actor: str, subject: str, kind: str, data: EventData) -> None:
        """Raise unless ``actor`` may cause a ``kind`` event now (before work an intent
        needs done first; :meth:`intent` checks again)."""
        ...

    async def intent(self, intent: Intent) -> int:
        """Apply a durable intent; its seq (the same again for a retried ``intent_id``)."""
        ...

    async def ephemeral(self, update: EphemeralUpdate, subject: str) -> None:
        """A latest-value update (head pose, pointer, drag) of ``update.participant_id``,
        whose token is ``subject``; ``update.t_ns`` as the client says (0: now)."""
        ...

    async def heartbeat(self, actor: str, subject: str) -> int:
        """``actor`` is alive; the seq of its "back" event when it was away, else 0."""
        ...

    async def leave(self, actor: str, subject: str, intent_id: str = "") -> int:
        """``actor`` leaves; the seq of its "left" event (0 where there is no presence)."""
        ...
