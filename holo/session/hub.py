"""The session hub of one node: which live sessions it serves, started on first use.

A case has one open session (:meth:`SessionHub.create_session`); its record lives on the
bus, so any node of the bus can serve it: :meth:`SessionHub.get` starts a
:class:`~holo.session.live.LiveSession` for it on this node the first time a participant
asks for it here. A session that ended here (:meth:`LiveSession.ended`: nobody in it, no
stream open, nothing recording) for ``HubConfig.evict_after_s`` is dropped from the node.
With an ``archive`` folder (``holo serve``: ``<data>/sessions``) its log is then written
there (:mod:`holo.session.archive`) and the bus lets its copy go
(:meth:`~holo.session.bus.Bus.retire`: at once in memory, after
``HubConfig.archive_keep_s`` on Redis): the session is over. Its id is then NOT_FOUND,
saying it was archived, and the case's next CreateSession opens a new session. Without an
archive folder its log stays on the bus, and a later :meth:`SessionHub.get` starts it
again from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from dataclasses import asdict
from pathlib import Path

from holo.audit import NO_AUDIT, Auditor
from holo.errors import NotFoundError
from holo.session.archive import archive_path, write_archive
from holo.session.bus import Bus
from holo.session.clock import SessionClock
from holo.session.live import HubConfig, LiveSession
from holo.session.records import SessionInfo

__all__ = ["SessionHub"]

logger = logging.getLogger(__name__)


class SessionHub:
    """All live sessions this node serves; ``audit`` receives what they audit."""

    def __init__(
        self,
        bus: Bus,
        *,
        config: HubConfig | None = None,
        audit: Auditor = NO_AUDIT,
        archive: Path | None = None,
    ) -> None:
        self.bus = bus
        self.archive = archive
        self.config = config or HubConfig()
        self.clock = SessionClock()
        self.audit = audit
        self._live: dict[str, LiveSession] = {}
        self._starting: dict[str, asyncio.Task[LiveSession]] = {}
        self._ended_since: dict[str, float] = {}  # session id -> when it was first seen ended
        self._reaper: asyncio.Task[None] | None = None
        # Sessions being archived: a join waits for it, then finds the session over.
        self._retiring: dict[str, asyncio.Task[None]] = {}

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

    async def find_session(self, case_id: str) -> SessionInfo:
        """The case's open session.

        Raises
        ------
        NotFoundError
            The case has none yet.
        """
        existing = await self.bus.find_session(case_id)
        if existing is None:
            raise NotFoundError(
                "session",
                case_id,
                "no session is open for this case yet; the presenter opens it",
            )
        return (await self.get(existing)).info

    def sessions(self) -> list[LiveSession]:
        """Every session this node serves now (for monitoring: counted, never named)."""
        return list(self._live.values())

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
        retiring = self._retiring.get(session_id)
        if retiring is not None:
            await asyncio.wait([retiring])  # its outcome is logged by _retire
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
            archived = None if self.archive is None else archive_path(self.archive, session_id)
            if archived is not None and await asyncio.to_thread(archived.is_file):
                raise NotFoundError(
                    "session",
                    session_id,
                    f"session {session_id} has ended and its log was archived; "
                    "open a new one (CreateSession) or find the case's (FindSession)",
                )
            raise NotFoundError("session", session_id)
        info = SessionInfo(**json.loads(raw))
        live = LiveSession(
            info, bus=self.bus, config=self.config, clock=self.clock, audit=self.audit
        )
        await live.start()
        self._live[session_id] = live
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap(), name="session reaper")
        return live

    async def _reap(self) -> None:
        """Drop the sessions that ended here ``evict_after_s`` ago, looking ten times per
        grace (at most every 10 s)."""
        every = min(max(self.config.evict_after_s / 10, 0.05), 10.0)
        while True:
            await asyncio.sleep(every)
            try:
                await self.evict_ended()
            except asyncio.CancelledError:
                raise
            except Exception:  # one session failing to stop must not keep the rest
                logger.exception("evicting ended sessions failed; trying again")

    async def evict_ended(self) -> list[str]:
        """Drop the sessions that have been ended for ``evict_after_s``; their ids."""
        now = time.monotonic()
        evicted = []
        for session_id, live in list(self._live.items()):
            if not live.ended():
                self._ended_since.pop(session_id, None)
                continue
            since = self._ended_since.setdefault(session_id, now)
            if now - since >= self.config.evict_after_s:
                # Out of the map first (no await before): a join from now on starts anew.
                del self._live[session_id]
                del self._ended_since[session_id]
                evicted.append(session_id)
                await live.stop()
                if self.archive is not None:
                    task = asyncio.ensure_future(self._retire(live))
                    self._retiring[session_id] = task
                    try:
                        await asyncio.shield(task)
                    finally:
                        if task.done():
                            self._retiring.pop(session_id, None)
        return evicted

    async def _retire(self, live: LiveSession) -> None:
        """Archive ``live``'s whole log from the bus, then let the bus drop it. When the
        archive cannot be written (a full disk) the bus keeps it: nothing is lost, and a
        later join starts the session again."""
        assert self.archive is not None
        session_id = live.session_id
        try:
            payloads = [payload for _, payload in await self.bus.read(session_id, 0)]
            path = await asyncio.to_thread(write_archive, self.archive, session_id, payloads)
        except (OSError, ValueError) as err:
            logger.error(
                "session %s: archiving its log failed (%s); the bus keeps it", session_id, err
            )
            return
        await self.bus.retire(session_id, live.case_id, keep_s=self.config.archive_keep_s)
        logger.info("session %s ended: %d events archived in %s", session_id, len(payloads), path)

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for live in list(self._live.values()):
            await live.stop()
        self._live.clear()
