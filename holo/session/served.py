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
from holo.session.records import EphemeralValue, SessionInfo
from holo.session.state import EventData, SessionState

__all__ = ["Joined", "ServedSession"]


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

    async def join(
        self,
        *,
        participant_id: str,
        role: str,
        subject: str,
        display_name: str,
        resume_from_seq: int,
    ) -> Joined:
        """Join or rejoin (``participant_id`` empty: a new participant)."""
        ...

    async def stream_alive(self, participant_id: str) -> None:
        """The participant's stream is being read: as good as a heartbeat (called about
        once per ``heartbeat_interval_s`` while it is)."""
        ...

    def leave_stream(self, joined: Joined) -> None:
        """The stream ended (client gone): stop delivering; presence decides the rest."""
        ...

    async def intent(
        self,
        actor: str,
        subject: str,
        kind: str,
        data: EventData,
        *,
        intent_id: str = "",
        t_ns: int = 0,
    ) -> int:
        """A durable intent; its seq (the same again for a retried ``intent_id``)."""
        ...

    async def ephemeral(
        self, actor: str, subject: str, channel: str, value: EphemeralValue, t_ns: int
    ) -> None:
        """A latest-value update (head pose, pointer, drag)."""
        ...

    async def heartbeat(self, actor: str, subject: str) -> int:
        """``actor`` is alive; the seq of its "back" event when it was away, else 0."""
        ...

    async def leave(self, actor: str, subject: str, intent_id: str = "") -> int:
        """``actor`` leaves; the seq of its "left" event (0 where there is no presence)."""
        ...
