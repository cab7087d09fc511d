"""The one access check: what a request names must belong to the caller's case.

The interceptors have checked the token and the role matrix (:data:`METHOD_ROLES`); what
a request is about (an upload, a study, a job, a model, a session, a track, a recording)
is checked here against the token's case, the same way for every service. A session id
resolves here, once, to the session it names, live or replayed
(:class:`~holo.session.served.ServedSession`).
"""

from __future__ import annotations

from holo.errors import PermissionDeniedError, PreconditionError, quote_id
from holo.recording.hub import RecordingHub
from holo.server.interceptors import current_claims
from holo.session import SessionHub
from holo.session.served import ServedSession

__all__ = ["SessionAccess", "check_case", "request_case"]


def request_case(requested: str = "") -> str:
    """The case a request is about: the token's; naming another is PERMISSION_DENIED."""
    case_id = current_claims().case_id
    if requested and requested != case_id:
        raise PermissionDeniedError(
            f"the token is for case {case_id!r}, not {quote_id(requested)}; mint a token for "
            "that case"
        )
    return case_id


def check_case(kind: str, ident: str, case_id: str) -> None:
    """PERMISSION_DENIED unless ``kind`` ``ident`` (of ``case_id``) is the caller's case."""
    mine = current_claims().case_id
    if case_id != mine:
        raise PermissionDeniedError(
            f"{kind} {quote_id(ident)} belongs to another case; the token is for {mine!r}"
        )


class SessionAccess:
    """Resolves session ids (live sessions of the hub, replays of the recording hub)."""

    def __init__(self, sessions: SessionHub, recordings: RecordingHub) -> None:
        self.sessions = sessions
        self.recordings = recordings

    async def session(self, session_id: str) -> ServedSession:
        """The session ``session_id`` names, if it is of the caller's case.

        Raises
        ------
        NotFoundError
            No live session or replay has this id.
        PermissionDeniedError
            It belongs to another case.
        """
        served: ServedSession | None = self.recordings.replay(session_id)
        if served is None:
            served = await self.sessions.get(session_id)
        check_case("session", session_id, served.info.case_id)
        return served

    async def live(self, session_id: str) -> ServedSession:
        """As :meth:`session`, for what only a live session takes (intents, tracks,
        recordings): a replay is FAILED_PRECONDITION, read-only."""
        served = await self.session(session_id)
        if served.read_only:
            raise PreconditionError(
                f"session {quote_id(session_id)} is a replay: read-only (ControlReplay seeks it)"
            )
        return served
