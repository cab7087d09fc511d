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

# The process umask, read once at import (reading it means setting it, which would race
# with other threads if done per write).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


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
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file normal permissions
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)  # the rename itself survives a crash
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
