"""The data folder is private to the server's user: 0700 folders, 0600 files.

The folder holds patient identity at rest: the SQLite database (patient names and IDs,
study descriptions, original UIDs, upload file names), the audit log, uploads, blobs,
recordings. Two layers keep other local accounts out:

- the store creates what it writes with private modes itself (folders 0700, files 0600,
  the database before SQLite opens it, so its ``-wal`` and ``-shm`` files, which SQLite
  creates with the database's mode, are 0600 too), and ``holo serve`` sets the process
  umask to 077 (:func:`holo.server.serve`), which covers files that libraries create (a
  recording's video tracks, a conversion's scratch files);
- on every open, :func:`make_private` closes up a folder made by an older holo or by
  hand: the folder itself becomes 0700, and anything in it that group or others may use
  loses those bits, with one log line saying how much changed.

Symbolic links are left alone (their modes mean nothing, and their targets are not the
store's).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

__all__ = ["PRIVATE_DIR", "PRIVATE_FILE", "make_private"]

logger = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
_OPEN_TO_OTHERS = stat.S_IRWXG | stat.S_IRWXO


def make_private(folder: Path) -> int:
    """Make ``folder`` 0700 and take group and other permissions off everything in it;
    return how many entries changed (logged once when any did)."""
    changed = failed = 0
    entries = [folder]
    for parent, dirs, files in os.walk(folder):
        entries += [Path(parent, name) for name in (*dirs, *files)]
    for entry in entries:
        try:
            mode = entry.lstat().st_mode
            if stat.S_ISLNK(mode) or not mode & _OPEN_TO_OTHERS:
                continue
            keep = stat.S_IMODE(mode) & ~_OPEN_TO_OTHERS
            entry.chmod(PRIVATE_DIR if stat.S_ISDIR(mode) else keep)
            changed += 1
        except OSError:  # gone meanwhile, or another user's file put here by hand
            failed += 1
    if changed:
        logger.warning(
            "data folder %r: made %d file(s) and folder(s) private to this user (other local "
            "accounts could read them)",
            folder.name,
            changed,
        )
    if failed:
        logger.warning(
            "data folder %r: could not make %d entries private; check their owner and modes",
            folder.name,
            failed,
        )
    return changed
