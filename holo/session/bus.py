"""The session bus: where a session's durable log and ephemeral channels live.

Every holo node serving a session talks to the same bus. The in-process
:class:`MemoryBus` is the default (one node, nothing to install);
:class:`holo.session.redis_bus.RedisBus` lets several nodes share sessions (a Redis stream
per session for the durable log, pub/sub for the ephemeral channels).

Payloads are opaque bytes to the bus (the hub encodes events as JSON). Appends are
optimistic: ``append(..., expected_seq=n)`` succeeds only when the log holds exactly ``n``
events, so the event gets ``seq = n + 1`` and two nodes can never both append on top of the
same state (the loser catches up, re-checks its intent against the newer state and tries
again). That keeps ``seq`` gap-free and the order identical on every node.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

from holo.errors import SessionError

__all__ = ["Bus", "MemoryBus", "SeqConflictError"]


class SeqConflictError(SessionError):
    """The log moved on since the caller's state: catch up and try again."""

    def __init__(self, session_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"session {session_id}: append expected seq {expected}, the log is at {actual}"
        )
        self.expected = expected
        self.actual = actual


class Bus(Protocol):
    """What a session hub needs from a bus. All methods are safe to call concurrently."""

    async def put_session(self, session_id: str, record: bytes) -> bytes:
        """Store a session's record unless one exists; return the stored record."""
        ...

    async def get_session(self, session_id: str) -> bytes | None:
        """A session's record, or None."""
        ...

    async def find_session(self, case_id: str) -> str | None:
        """The open session of a case, or None."""
        ...

    async def claim_case(self, case_id: str, session_id: str) -> str:
        """Make ``session_id`` the case's session unless it has one; return the case's."""
        ...

    async def append(
        self, session_id: str, payload: bytes, *, expected_seq: int, case_id: str = ""
    ) -> int:
        """Append one durable event as ``seq = expected_seq + 1``; return that seq.

        An append means the session is in use: an expiry :meth:`retire` set on its log, its
        record and (``case_id`` given) its case's claim on it is lifted.

        Raises
        ------
        SeqConflictError
            The log does not hold exactly ``expected_seq`` events.
        """
        ...

    async def read(self, session_id: str, after_seq: int) -> list[tuple[int, bytes]]:
        """Every durable event with ``seq > after_seq``, in order."""
        ...

    def tail(self, session_id: str, after_seq: int) -> AsyncIterator[tuple[int, bytes]]:
        """Durable events with ``seq > after_seq``, in order, as they are appended; forever."""
        ...

    async def publish(self, session_id: str, payload: bytes) -> None:
        """Send an ephemeral value to every node serving the session (at most once, no log)."""
        ...

    def subscribe(
        self, session_id: str, ready: asyncio.Event | None = None
    ) -> AsyncIterator[bytes]:
        """Ephemeral values published once the subscription is in place; forever.

        It is put in place when first iterated; ``ready`` is set once it is (for Redis:
        once Redis confirmed it), so a caller can wait for that before relying on it.
        """
        ...

    async def unavailable(self) -> str:
        """Why the bus cannot serve now, in one line; empty while it can. Answers within a
        few seconds even when the bus does not (health asks every 2 s)."""
        ...

    async def retire(self, session_id: str, case_id: str, *, keep_s: float) -> None:
        """The session was archived by a node that no longer serves it: its record, its
        log and its case's claim on it may go (after ``keep_s`` on a bus other nodes
        share, where it may still be served; an append there keeps it)."""
        ...

    async def close(self) -> None: ...


class MemoryBus:
    """The in-process bus: one node, the log in memory (lost when the process ends)."""

    def __init__(self) -> None:
        self._sessions: dict[str, bytes] = {}
        self._cases: dict[str, str] = {}
        self._logs: dict[str, list[bytes]] = {}
        self._appended: dict[str, asyncio.Condition] = {}
        self._listeners: dict[str, set[asyncio.Queue[bytes]]] = {}

    async def put_session(self, session_id: str, record: bytes) -> bytes:
        return self._sessions.setdefault(session_id, record)

    async def get_session(self, session_id: str) -> bytes | None:
        return self._sessions.get(session_id)

    async def find_session(self, case_id: str) -> str | None:
        return self._cases.get(case_id)

    async def claim_case(self, case_id: str, session_id: str) -> str:
        return self._cases.setdefault(case_id, session_id)

    def _condition(self, session_id: str) -> asyncio.Condition:
        return self._appended.setdefault(session_id, asyncio.Condition())

    async def append(
        self, session_id: str, payload: bytes, *, expected_seq: int, case_id: str = ""
    ) -> int:
        log = self._logs.setdefault(session_id, [])
        if len(log) != expected_seq:
            raise SeqConflictError(session_id, expected_seq, len(log))
        log.append(payload)
        condition = self._condition(session_id)
        async with condition:
            condition.notify_all()
        return len(log)

    async def read(self, session_id: str, after_seq: int) -> list[tuple[int, bytes]]:
        log = self._logs.get(session_id, [])
        return [(seq, log[seq - 1]) for seq in range(after_seq + 1, len(log) + 1)]

    async def tail(self, session_id: str, after_seq: int) -> AsyncIterator[tuple[int, bytes]]:
        seq = after_seq
        condition = self._condition(session_id)
        while True:
            log = self._logs.get(session_id, [])
            while seq < len(log):
                seq += 1
                yield seq, log[seq - 1]
            async with condition:
                await condition.wait_for(
                    lambda reached=seq: len(self._logs.get(session_id, [])) > reached  # type: ignore[misc]
                )

    async def publish(self, session_id: str, payload: bytes) -> None:
        for queue in self._listeners.get(session_id, ()):
            if queue.full():  # a stuck listener loses the oldest, never blocks the sender
                queue.get_nowait()
            queue.put_nowait(payload)

    async def subscribe(
        self, session_id: str, ready: asyncio.Event | None = None
    ) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4096)
        listeners = self._listeners.setdefault(session_id, set())
        listeners.add(queue)
        if ready is not None:
            ready.set()
        try:
            while True:
                yield await queue.get()
        finally:
            listeners.discard(queue)
            if not listeners and self._listeners.get(session_id) is listeners:
                del self._listeners[session_id]  # nothing of an ended session stays

    async def unavailable(self) -> str:
        return ""  # in this process: up while the process is

    async def retire(self, session_id: str, case_id: str, *, keep_s: float) -> None:
        # One node: the hub that archived it was the only one serving it; drop it now.
        self._sessions.pop(session_id, None)
        self._logs.pop(session_id, None)
        self._appended.pop(session_id, None)
        if self._cases.get(case_id) == session_id:
            del self._cases[case_id]  # the case's next CreateSession opens a new session

    async def close(self) -> None:
        self._listeners.clear()
