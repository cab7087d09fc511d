"""The exceptions holo raises.

Every error a user can cause is a :class:`HoloError`. Subclasses carry the input they are
about as keyword fields (``path=``, ``series_uid=``) so callers, the CLI and the gRPC error
interceptor can report it without parsing the message. Messages are one line: what failed,
on which input, and what to do about it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "HoloError",
    "PipelineError",
    "SeriesGeometryError",
    "SessionError",
    "StudyError",
]


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
