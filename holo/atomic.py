"""Atomic file output: write to a temporary file beside the target, then rename.

A reader never sees a partial file, and a failure leaves the previous file (or nothing).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "fsync_dir"]

# The process umask at import (reading it with os.umask means setting it, which would race
# with other threads if done per write); _umask() reads the current one where it can.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _umask() -> int:
    """The process umask now: ``holo serve`` tightens it to 077 after import (Linux shows
    it in /proc since 4.7; elsewhere the umask at import)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return _UMASK


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it over ``target``.

    The temporary name keeps the target's suffixes (writers such as SimpleITK choose the
    format from them). On an exception the temporary file is removed and nothing is renamed.
    """
    target = Path(target)
    suffix = "".join(target.suffixes) or ".tmp"
    fd, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)  # the rename itself survives a crash
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
