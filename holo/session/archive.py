"""A session's durable log, kept in the data folder once the session is evicted.

When a node evicts a session that ended (:meth:`holo.session.hub.SessionHub.evict_ended`),
it writes the session's whole log from the bus to ``<data>/sessions/<session_id>.jsonl``,
then lets the bus drop its copy (:meth:`holo.session.bus.Bus.retire`). The format is the
one recordings use for their ``events.jsonl`` (:mod:`holo.recording.files`): one
:meth:`Event.encode` line per durable event, in ``seq`` order, from ``seq`` 1, so the same
readers and tools take both, and the lines are the bus's payloads byte for byte (nothing
is decoded and re-encoded on the way). JSON lines rather than something more compact:
a session's log is small (3.3 MB for a session full to every bound; ``SessionLimits``),
and an auditor can read it with any tool.

Crash safety: the file is written whole beside its target and renamed (:mod:`holo.atomic`),
0600 in a 0700 folder, before the bus's copy is dropped; a crash or a full disk leaves the
bus's copy and no file, or a complete file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from holo.atomic import atomic_path
from holo.session.state import Event

__all__ = ["archive_path", "read_archive", "write_archive"]

# Session ids are "ses_" and URL-safe base64 (hub.create_session): a file name, never a path.
_SAFE = re.compile(r"[A-Za-z0-9_-]{1,128}")


def archive_path(folder: Path, session_id: str) -> Path | None:
    """Where ``session_id``'s archive is (or would be); None for an id that is no file name."""
    if _SAFE.fullmatch(session_id) is None:
        return None
    return folder / f"{session_id}.jsonl"


def write_archive(folder: Path, session_id: str, payloads: Iterable[bytes]) -> Path:
    """Write the log's ``payloads`` (in seq order) atomically, 0600; returns the file.

    Raises
    ------
    ValueError
        ``session_id`` is not a file name.
    OSError
        The folder or the file could not be written (nothing is left half-written).
    """
    path = archive_path(folder, session_id)
    if path is None:
        raise ValueError("a session id of A-Z a-z 0-9 _ - is needed for an archive's name")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            for payload in payloads:
                fh.write(payload.rstrip(b"\n") + b"\n")
        os.chmod(tmp, 0o600)  # the log names participants: private, whatever the umask
    return path


def read_archive(path: Path) -> list[Event]:
    """The events of an archive, in seq order."""
    with open(path, "rb") as fh:
        return [Event.decode(line) for line in fh if line.strip()]
