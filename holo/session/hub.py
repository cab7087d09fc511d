"""The session hub of one node: which live sessions it serves, started on first use.

A case has one open session (:meth:`SessionHub.create_session`); its record lives on the
bus, so any node of the bus can serve it: :meth:`SessionHub.get` starts a
:class:`~holo.session.live.LiveSession` for it on this node the first time a participant
asks for it here.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import asdict

from holo.audit import NO_AUDIT, Auditor
from holo.errors import NotFoundError
from holo.session.bus import Bus
from holo.session.clock import SessionClock
from holo.session.live import HubConfig, LiveSession
from holo.session.records import SessionInfo

__all__ = ["SessionHub"]


class SessionHub:
    """All live sessions this node serves; ``audit`` receives what they audit."""

    def __init__(
        self, bus: Bus, *, config: HubConfig | None = None, audit: Auditor = NO_AUDIT
    ) -> None:
        self.bus = bus
        self.config = config or HubConfig()
        self.clock = SessionClock()
        self.audit = audit
        self._live: dict[str, LiveSession] = {}
        self._starting: dict[str, asyncio.Task[LiveSession]] = {}

    async def create_session(self, case_id: str) -> SessionInfo:
        """The case's session, created when it has none."""
        existing = await self.bus.find_session(case_id)
        if existing is None:
            session_id = f"ses_{secrets.token_urlsafe(12)}"
            existing = await self.bus.claim_case(case_id, session_id)
            if existing == session_id:
                info = SessionInfo(session_id, case_id, self.clock.now_ns())
                await self.bus.put_session(session_id, json.dumps(asdict(info)).encode())
        return (await self.get(existing)).info

    def live(self, session_id: str) -> LiveSession | None:
        """The session if this node serves it already (no bus read)."""
        return self._live.get(session_id)

    async def get(self, session_id: str) -> LiveSession:
        """The live session ``session_id``, started on this node if it is not yet.

        Raises
        ------
        NotFoundError
            No session has this id.
        """
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
        info = SessionInfo(**json.loads(raw))
        live = LiveSession(
            info, bus=self.bus, config=self.config, clock=self.clock, audit=self.audit
        )
        await live.start()
        self._live[session_id] = live
        return live

    async def close(self) -> None:
        for live in list(self._live.values()):
            await live.stop()
        self._live.clear()
