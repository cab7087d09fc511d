"""Free space on the store's disk, and the reserve that uploads may not take.

A full disk stops every write at once: SQLite commits, the audit log's fsync (no join,
leave or conversion without its audit line) and recordings. Uploads are what fills a
server's disk (a study is 100 MB to a few GB; everything else the server writes is small
or tied to a running procedure), so uploads stop short of it: a new upload is refused
unless its whole announced size fits above the reserve. Uploads accepted together may
still fill the disk between them (or something else does); the chunk that then meets the
full disk drops its upload, whose bytes are what frees the disk (:mod:`holo.store.uploads`).

The reserve, by default the smaller of 1 GiB and 5% of the file system:

- 1 GiB keeps the small writers going for a long time: an audit line is ~250 bytes (a
  million lines is 250 MB) and an upload's row ~0.5 KB, and it leaves room for one
  conversion's scratch volume and model (a 512 x 512 x 1,000 CT is 500 MB as int16; its
  model tens of MB).
- 5% (ext4 keeps the same share for root) so that a small disk, such as a 16 GB
  development VM or a test's tmpfs, is not refused outright.

``holo serve --min-free`` sets it: ``0``, a size (``512M``, ``2G``) or a share (``10%``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from holo.errors import DiskFullError, InvalidRequestError

__all__ = ["DEFAULT_MIN_FREE", "FULL_BYTES", "DiskSpace", "parse_min_free"]

#: The reserve when none is given: the smaller of these two (see the module docstring).
DEFAULT_MIN_FREE = "1G,5%"
#: Below this the disk counts as full whatever the reserve (even ``--min-free 0``): a
#: commit needs a few 4 KiB pages of WAL, an audit batch a few KiB, and a write of one
#: more upload chunk (1 MiB) would fail.
FULL_BYTES = 1 << 20

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"(\d+)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
_SHARE = re.compile(r"(\d+(?:\.\d+)?)\s*%")


def parse_min_free(spec: str | int, total_bytes: int) -> int:
    """The reserve in bytes that ``spec`` names on a file system of ``total_bytes``.

    ``spec`` is a byte count, a size with a binary unit (``512M``, ``1G``, ``1GiB``), a
    share of the file system (``5%``), or several of these separated by commas, of which
    the smallest applies (the default ``1G,5%``).

    Raises
    ------
    InvalidRequestError
        ``spec`` is none of these.
    """
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 0:
            raise InvalidRequestError(f"--min-free {spec} is negative; give 0 or more bytes")
        return spec
    values = []
    for part in str(spec).split(","):
        part = part.strip()
        if size := _SIZE.fullmatch(part):
            values.append(int(size.group(1)) * _UNITS[size.group(2).upper()])
        elif (share := _SHARE.fullmatch(part)) and float(share.group(1)) <= 100:
            values.append(int(total_bytes * float(share.group(1)) / 100))
        else:
            raise InvalidRequestError(
                f"--min-free {str(spec)[:40]!r} is not a size or a share of the disk; write "
                "e.g. 0, 512M, 2G or 5%"
            )
    return min(values)


class DiskSpace:
    """The free space of the file system holding ``root``, against a reserve.

    Parameters
    ----------
    root
        The store (data) folder. Only its name appears in messages: they reach clients.
    min_free
        The reserve, as :func:`parse_min_free` reads it (default :data:`DEFAULT_MIN_FREE`).
    """

    def __init__(self, root: Path, min_free: str | int = DEFAULT_MIN_FREE) -> None:
        self.root = root
        self.name = root.name
        stats = os.statvfs(root)
        self.total_bytes = stats.f_blocks * stats.f_frsize
        self.reserve_bytes = parse_min_free(min_free, self.total_bytes)

    def free_bytes(self) -> int:
        """Bytes a process of this user may still write (what ``df`` calls available)."""
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    def low(self) -> bool:
        """True while free space is below the reserve (new uploads are refused), or below
        :data:`FULL_BYTES` whatever the reserve: the disk is (nearly) full."""
        return self.free_bytes() < max(self.reserve_bytes, FULL_BYTES)

    def check_room(self, need_bytes: int, what: str) -> None:
        """Raise :class:`DiskFullError` unless ``need_bytes`` fit above the reserve.

        ``what`` names the write in the message (``"upload up_x of 12 MiB"``).
        """
        free = self.free_bytes()
        if free - need_bytes >= self.reserve_bytes:
            return
        raise DiskFullError(
            f"the server's disk is too full for {what}: {_mib(free)} free, and "
            f"{_mib(self.reserve_bytes)} are kept for sessions and the audit log; free space "
            f"in its data folder {self.name!r}, then try again",
            folder=self.name,
        )


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n} bytes"
