"""Content-addressed blob files: ``blobs/ab/cdef...``, named by the SHA-256 of their bytes.

A blob is written once and never changed. It appears only by ``os.replace`` of a complete,
fsynced file onto its final name, and the name is the hash of exactly the bytes written, so a
blob file whose content does not match its name cannot exist (short of disk corruption), and
a crash leaves at most a stray file in ``tmp/``, which the store clears when it opens.

:func:`holo.atomic.atomic_path` is not used here: it needs the target name before the bytes
are written and puts its temporary file beside the target, while a blob's name is known only
after hashing (:meth:`BlobDir.put_file` hashes while it copies, so the name always describes
the bytes that landed) and the store keeps every temporary file in ``tmp/``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from holo.atomic import fsync_dir
from holo.errors import NotFoundError, disk_full
from holo.store.private import PRIVATE_DIR
from holo.store.records import is_sha256

__all__ = ["BlobDir", "hash_file"]

logger = logging.getLogger(__name__)

_COPY_BYTES = 1 << 20


def hash_file(path: Path) -> str:
    """Return the lowercase-hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_COPY_BYTES):
            digest.update(block)
    return digest.hexdigest()


class BlobDir:
    """The blob folder of one store.

    Parameters
    ----------
    root
        The ``blobs/`` folder; created if missing.
    tmp
        The store's ``tmp/`` folder, on the same file system (so renames are atomic).
    """

    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = root
        self.tmp = tmp
        root.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        tmp.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)

    def _target(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:]

    def has(self, sha256: str) -> bool:
        """Tell whether the blob is stored; a malformed digest is simply absent."""
        return is_sha256(sha256) and self._target(sha256).is_file()

    def path(self, sha256: str) -> Path:
        """Return the blob's file path.

        Raises
        ------
        NotFoundError
            ``("blob", sha256)`` if the digest is malformed or no such blob is stored.
        """
        if not self.has(sha256):
            raise NotFoundError("blob", str(sha256))
        return self._target(sha256)

    def size(self, sha256: str) -> int:
        """Return the blob's size in bytes (:class:`NotFoundError` if absent)."""
        return self.path(sha256).stat().st_size

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` and return its SHA-256; no write if the blob is already there.

        Raises
        ------
        DiskFullError
            The disk is full; nothing is left behind.
        """
        sha256 = hashlib.sha256(data).hexdigest()
        if self.has(sha256):
            return sha256
        with self._writing() as tmp:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            self._install(tmp, sha256)
        return sha256

    def put_file(self, source: Path) -> str:
        """Copy a file into the store and return its SHA-256; ``source`` is left as it was.

        The bytes are hashed as they are copied, so the blob's name matches the bytes stored
        even if ``source`` changes meanwhile.
        """
        digest = hashlib.sha256()
        with self._writing() as tmp:
            with open(source, "rb") as src, open(tmp, "wb") as dst:
                while block := src.read(_COPY_BYTES):
                    digest.update(block)
                    dst.write(block)
                dst.flush()
                os.fsync(dst.fileno())
            sha256 = digest.hexdigest()
            if not self.has(sha256):
                self._install(tmp, sha256)
        return sha256

    @contextmanager
    def _writing(self) -> Iterator[Path]:
        """A new temporary file in ``tmp/``, always removed afterwards; a full disk met
        meanwhile is raised as :class:`DiskFullError`."""
        try:
            tmp = self._new_tmp()
            try:
                yield tmp
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as err:
            full = disk_full(err, self.root.parent)
            if full is None:
                raise
            raise full from err

    def adopt(self, path: Path, sha256: str) -> None:
        """Move a complete, fsynced file whose bytes hash to ``sha256`` into place.

        The caller vouches for the hash (it has just computed it). If the blob is already
        stored, ``path`` is deleted instead. Either way ``path`` is gone afterwards.
        """
        if self.has(sha256):
            path.unlink(missing_ok=True)
            return
        self._install(path, sha256)

    def clear_tmp(self) -> int:
        """Delete everything in ``tmp/`` (left by a crash); return how many entries went."""
        count = 0
        for entry in self.tmp.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            count += 1
        if count:
            logger.info("removed %d leftover temporary file(s) from %s", count, self.tmp)
        return count

    def _new_tmp(self) -> Path:
        # mkstemp makes the file 0600: blobs hold patient data, readable by the service only.
        fd, name = tempfile.mkstemp(prefix="blob.", suffix=".tmp", dir=self.tmp)
        os.close(fd)
        return Path(name)

    def _install(self, file: Path, sha256: str) -> None:
        target = self._target(sha256)
        if not target.parent.is_dir():
            target.parent.mkdir(mode=PRIVATE_DIR, exist_ok=True)
            fsync_dir(self.root)  # the new fan-out folder itself survives a crash
        os.replace(file, target)
        fsync_dir(target.parent)  # so does the rename
        logger.debug("stored blob %s (%d bytes)", sha256, target.stat().st_size)
