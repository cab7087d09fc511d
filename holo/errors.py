"""The exceptions holo raises.

Every error a user can cause is a :class:`HoloError`. Subclasses carry the input they are
about as keyword fields (``path=``, ``series_uid=``) so callers, the CLI and the gRPC error
interceptor can report it without parsing the message. Messages are one line: what failed,
on which input, and what to do about it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = [
    "AuthError",
    "ChecksumError",
    "DiskFullError",
    "ExtraError",
    "HoloError",
    "IgtlError",
    "InvalidRequestError",
    "LeaseLostError",
    "LimitError",
    "NotFoundError",
    "OffsetError",
    "PermissionDeniedError",
    "PipelineError",
    "PreconditionError",
    "RangeError",
    "RateLimitError",
    "RecordingError",
    "RegistrationError",
    "SeriesGeometryError",
    "SessionError",
    "StudyError",
    "UnavailableError",
    "VideoError",
    "disk_full",
    "quote_id",
]

#: Characters of an id a message shows: every holo id is 1 to 128 characters
#: (proto/holo/v1/common.proto), so a well-formed one is shown whole; anything longer is
#: cut (a 1 MiB id echoed whole made a status message no client accepts: gRPC clients take
#: 16 KiB of trailers by default).
QUOTED_ID_CHARS = 128


def quote_id(ident: object, *, limit: int = QUOTED_ID_CHARS) -> str:
    """``ident`` quoted for a message (its ``repr``), shortened past ``limit`` characters:
    ``'abc...'…(1048576 chars)``. Every id or name a message echoes goes through here."""
    if isinstance(ident, str):
        if len(ident) <= limit:
            return repr(ident)
        return f"{ident[:limit]!r}…({len(ident)} chars)"
    text = repr(ident)
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} chars)"


class HoloError(Exception):
    """Base class of every error holo raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StudyError(HoloError):
    """The input study is unreadable, unsupported or has no usable image.

    Parameters
    ----------
    message
        One line: what is wrong, with which file or series, and what to do.
    path
        The file or folder the error is about, when there is one.
    series_uid
        The (0020,000E) SeriesInstanceUID the error is about, when there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        series_uid: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)
        self.series_uid = series_uid


class SeriesGeometryError(StudyError):
    """A series cannot be stacked into a volume as it stands: gaps, mixed orientation or size."""


class PipelineError(HoloError):
    """A conversion stage produced nothing usable."""


class SessionError(HoloError):
    """A viewing session is not found, full or stale."""


class InvalidRequestError(HoloError):
    """A request is malformed: a missing or ill-formed field, an unknown preset."""


class NotFoundError(HoloError):
    """No stored object has this id (or the caller's case holds none).

    Parameters
    ----------
    kind
        What was looked for: ``"upload"``, ``"study"``, ``"job"``, ``"model"``, ``"blob"``.
    ident
        The id asked for.
    message
        Said instead of the usual "no KIND with id ...; list them" line.
    """

    def __init__(self, kind: str, ident: str, message: str | None = None) -> None:
        super().__init__(
            message or f"no {kind} with id {quote_id(ident)}; list them to see the ids there are"
        )
        self.kind = kind
        self.ident = ident


class RegistrationError(InvalidRequestError):
    """Points given to a registration cannot determine one: too few, counts that differ,
    non-finite values, or fiducials (nearly) in a row.

    Parameters
    ----------
    message
        One line: what is wrong with which input, and what to do.
    input_name
        The argument the error is about (``"room_mm"``, ``"patient_lps_mm"``, ...).
    """

    def __init__(self, message: str, *, input_name: str) -> None:
        super().__init__(message)
        self.input_name = input_name


class OffsetError(HoloError):
    """An upload chunk does not start where the upload stands; resume at ``expected``."""

    def __init__(self, message: str, *, expected: int) -> None:
        super().__init__(message)
        self.expected = expected


class RangeError(HoloError):
    """A position is outside the object it is about (e.g. a model offset past its end)."""


class ChecksumError(HoloError):
    """Uploaded content does not match the SHA-256 it was announced with."""


class LimitError(HoloError):
    """A size limit (whole upload, one chunk, a zip's content) would be exceeded."""


class RateLimitError(LimitError):
    """A caller went over one of its rate limits (:mod:`holo.server.ratelimit`); the same
    call succeeds again after ``retry_after_s`` seconds."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DiskFullError(HoloError):
    """The disk holding the server's data folder is full (or below its free-space reserve):
    nothing was written; space must be freed before such writes work again.

    Parameters
    ----------
    message
        One line: what could not be written, and what to do.
    folder
        The data folder's *name* (never its full path: messages reach clients).
    """

    def __init__(self, message: str, *, folder: str = "") -> None:
        super().__init__(message)
        self.folder = folder


#: ``OSError.errno`` of a full file system, and of a user's exhausted disk quota.
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: SQLite's result code SQLITE_FULL (``sqlite3.SQLITE_FULL``; compared by value so that
#: importing holo does not import sqlite3).
_SQLITE_FULL = 13


def disk_full(error: BaseException, folder: str | os.PathLike[str]) -> DiskFullError | None:
    """The one translation of a full disk into :class:`DiskFullError`, or None.

    ``error`` is a full disk when it is an :class:`OSError` with ENOSPC or EDQUOT, or an
    SQLite error with code SQLITE_FULL ("database or disk is full"; SQLite reports the
    write's ENOSPC that way); anything else is not (None). ``folder`` is the data folder;
    only its name goes into the message.
    """
    sqlite_full = getattr(error, "sqlite_errorcode", None) == _SQLITE_FULL  # sqlite3.Error
    if not (sqlite_full or (isinstance(error, OSError) and error.errno in _FULL_ERRNOS)):
        return None
    name = Path(folder).name
    where = f"in its data folder {name!r}" if name else "on it"
    return DiskFullError(
        f"the server's disk is full; free space {where} (or move the folder to a larger "
        "disk), then try again",
        folder=name,
    )


class AuthError(HoloError):
    """A call carries no token, or one that is forged, malformed or expired."""


class PermissionDeniedError(HoloError):
    """The token is valid but its role or case does not allow this call."""


class PreconditionError(HoloError):
    """The call cannot proceed in the present state (e.g. an incompatible protocol version)."""


class LeaseLostError(PreconditionError):
    """A node's claim on a conversion job no longer holds: another node took the job over
    after the lease ran out, or it finished (was cancelled) meanwhile. The node stops the
    conversion and publishes nothing; no client sees this error."""

    def __init__(self, message: str, *, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class UnavailableError(HoloError):
    """A component the call needs (the session bus) does not answer; try again shortly."""


class VideoError(HoloError):
    """A video source cannot be opened, read or decoded: missing, silent, not video, unsupported.

    Parameters
    ----------
    message
        One line: what is wrong with which source, and what to do.
    url
        The source as it was given (a path, a URL or ``v4l2:/dev/videoN``), when there is one.
    """

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class RecordingError(HoloError):
    """A recording cannot be written or read; ``path`` is the file or folder concerned."""

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)


class IgtlError(HoloError):
    """An OpenIGTLink message that cannot be taken: a malformed header, a wrong CRC, a body
    over the limit, a body that does not match its type. The gateway drops the connection
    that sent it; ``message_type`` is the header's type name when it could be read.
    """

    def __init__(self, message: str, *, message_type: str = "") -> None:
        super().__init__(message)
        self.message_type = message_type


class ExtraError(HoloError, ImportError):
    """A feature was used without the optional dependencies (the extra) it needs.

    Also an :class:`ImportError`, so code that tolerates a missing module keeps working.
    """

    def __init__(self, message: str, *, extra: str) -> None:
        super().__init__(message)
        self.extra = extra
