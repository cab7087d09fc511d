"""Where the bytes of an unfinished upload wait: a file on this node, or objects all nodes see.

:class:`holo.store.uploads.Uploads` keeps the rules (offsets, limits, the checksum, expiry);
a parts keeper keeps the bytes, and commits a chunk's new offset only once the chunk is
durable, so an offset a client was told about is always there to resume from.

- :class:`FileParts` (one node, the default): ``uploads/<upload_id>.part``, written at the
  offset and fsynced, then the offset committed to the catalog. A kill in between leaves
  the file longer than its offset; :meth:`FileParts.recover` cuts it back.
- :class:`ObjectParts` (nodes sharing a PostgreSQL catalog and an object store, issue 18):
  each chunk is the object ``uploads/<upload_id>/<offset>-<size>``, and the catalog's
  ``upload_parts`` table lists the chunks committed, in the transaction that moves the
  upload's offset (conditional on the offset, so two nodes given the same chunk commit it
  once). A client that loses its node resumes on another at the acknowledged offset; the
  node that receives the last chunk reads the committed ones back in order, checks the
  whole file's SHA-256 and stores it as a blob. An object put but never committed (a node
  killed in between, the loser of a race) is listed nowhere and goes with its upload;
  whatever a node killed at the end of an upload left goes at the next expiry's sweep.

The last chunk is never committed as a part: the file is finished (or refused) with it in
one step, so an upload is either waiting for bytes or complete, never stuck in between.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from holo.atomic import fsync_dir
from holo.errors import OffsetError
from holo.store.private import PRIVATE_DIR
from holo.store.records import UploadRecord

if TYPE_CHECKING:
    from holo.store.blobs import BlobDir
    from holo.store.s3 import S3Blobs

__all__ = ["FileParts", "ObjectParts"]

logger = logging.getLogger(__name__)

_SUFFIX = ".part"

#: Commits a chunk: ``(record, new offset)`` -> the record as stored.
Commit = Callable[[UploadRecord, int], UploadRecord]


def _moved(record: UploadRecord, offset: int) -> OffsetError:
    return OffsetError(
        f"upload {record.upload_id}: chunk at offset {offset}, but the upload stands at "
        f"{record.offset}; resume from {record.offset}",
        expected=record.offset,
    )


class FileParts:
    """Unfinished uploads as ``.part`` files in ``folder`` (one node)."""

    kept_elsewhere = False  # the bytes are on this node's disk

    def __init__(self, folder: Path, catalog: Any) -> None:
        self.folder = folder
        self._catalog = catalog
        folder.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)

    def _part(self, upload_id: str) -> Path:
        return self.folder / f"{upload_id}{_SUFFIX}"

    def create(self, upload_id: str) -> None:
        """Make the upload's empty ``.part`` file, durably (before its row is written)."""
        fd = os.open(self._part(upload_id), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.folder)

    def holds(self, upload_id: str) -> bool:
        """Tell whether the bytes received so far are here to resume from."""
        return self._part(upload_id).exists()

    def _write(self, upload_id: str, offset: int, data: bytes) -> None:
        with open(self._part(upload_id), "r+b") as fh:
            # Seek and truncate rather than append: bytes past the offset (a write that
            # failed half-way) are overwritten, never kept.
            fh.seek(offset)
            fh.write(data)
            fh.truncate()
            fh.flush()
            os.fsync(fh.fileno())

    def add(self, record: UploadRecord, offset: int, data: bytes) -> UploadRecord:
        """Write a chunk that is not the last, durably, then commit the new offset."""
        self._write(record.upload_id, offset, data)
        new = dataclasses.replace(record, offset=offset + len(data))
        return self._catalog.replace(UploadRecord, record.upload_id, lambda _old: new)

    @contextmanager
    def whole(self, record: UploadRecord, offset: int, data: bytes) -> Iterator[Path]:
        """Write the last chunk and give the whole file (the caller may move it away)."""
        self._write(record.upload_id, offset, data)
        yield self._part(record.upload_id)

    def remove(self, upload_id: str) -> None:
        """Delete the upload's bytes (gone already is fine)."""
        self._part(upload_id).unlink(missing_ok=True)

    def sync(self) -> None:
        """Make removals durable."""
        fsync_dir(self.folder)

    def sweep(self, pending: Callable[[], set[str]]) -> None:
        """Nothing to sweep while the store is open: :meth:`recover` did it on open."""

    def last_write_s(self, record: UploadRecord) -> float | None:
        """When a chunk was last written (seconds since the epoch), if ever."""
        try:
            return self._part(record.upload_id).stat().st_mtime
        except FileNotFoundError:
            return None

    def recover(
        self,
        pending: dict[str, UploadRecord],
        blobs: BlobDir | S3Blobs,
        set_offset: Callable[[UploadRecord, int, bool], UploadRecord],
    ) -> None:
        """Make the ``.part`` files agree with the catalog again, after a crash.

        Deletes ``.part`` files (and anything else) without an unfinished upload; cuts a
        file longer than its recorded offset back to the offset; marks an upload complete
        when its ``.part`` file is gone and its blob is stored (killed after the finished,
        verified file was moved into place or dropped, before the commit). An upload whose
        ``.part`` file is still there resumes even if its blob is stored: the content
        may be another case's, and only the bytes themselves prove a client holds it.
        """
        for entry in self.folder.iterdir():
            is_part = entry.name.endswith(_SUFFIX) and entry.is_file()
            if not is_part or entry.name.removesuffix(_SUFFIX) not in pending:
                logger.info("removing %s: no unfinished upload has it", entry)
                entry.unlink(missing_ok=True)
        for record in pending.values():
            part = self._part(record.upload_id)
            if not part.exists() and blobs.has(record.sha256):
                set_offset(record, record.size_bytes, True)
                continue
            if not part.exists():
                self.create(record.upload_id)
            length = part.stat().st_size
            if length > record.offset:
                logger.info(
                    "upload %s: cutting %s from %d bytes back to the recorded %d",
                    record.upload_id,
                    part,
                    length,
                    record.offset,
                )
                with open(part, "r+b") as fh:
                    fh.truncate(record.offset)
                    os.fsync(fh.fileno())
            elif length < record.offset:
                # Only possible if something outside the store touched the file.
                logger.warning(
                    "upload %s: %s has %d bytes, fewer than the recorded %d; resuming from %d",
                    record.upload_id,
                    part,
                    length,
                    record.offset,
                    length,
                )
                set_offset(record, length, False)


class ObjectParts:
    """Unfinished uploads as objects in the shared object store, listed in the catalog.

    Parameters
    ----------
    blobs
        The shared object store (its bucket and prefix hold ``uploads/``).
    catalog
        The shared PostgreSQL catalog (:class:`holo.store.postgres.PostgresCatalog`).
    """

    kept_elsewhere = True  # in the object store: a full local disk loses nothing

    def __init__(self, blobs: S3Blobs, catalog: Any) -> None:
        self._blobs = blobs
        self._catalog = catalog

    @staticmethod
    def _folder(upload_id: str) -> str:
        return f"uploads/{upload_id}/"

    def _key(self, upload_id: str, offset: int, size: int) -> str:
        # The size in the name: a client that resends a range in chunks of another size
        # (another node, another client build) never overwrites a committed object.
        return f"{self._folder(upload_id)}{offset:013d}-{size}"

    def create(self, upload_id: str) -> None:
        """Nothing to make: the first chunk makes the first object."""

    def holds(self, upload_id: str) -> bool:
        """Committed chunks are in the object store, whichever node received them."""
        return True

    def add(self, record: UploadRecord, offset: int, data: bytes) -> UploadRecord:
        """Put a chunk that is not the last, then commit it and the new offset together,
        if the upload still stands at ``offset`` (another node may have moved it)."""
        self._blobs.put_object(self._key(record.upload_id, offset, len(data)), data)

        def advance(current: UploadRecord) -> UploadRecord:
            if current.complete or current.offset != offset:
                raise _moved(current, offset)
            return dataclasses.replace(current, offset=offset + len(data))

        return self._catalog.add_upload_part(record.upload_id, offset, len(data), advance)

    @contextmanager
    def whole(self, record: UploadRecord, offset: int, data: bytes) -> Iterator[Path]:
        """The committed chunks read back in order, then the last one, as a local file
        in the cache's scratch folder (the caller may move it away)."""
        fd, name = tempfile.mkstemp(prefix="upload.", suffix=".tmp", dir=self._blobs.tmp)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                at = 0
                for part_offset, size in self._catalog.upload_parts(record.upload_id):
                    if part_offset != at:  # the commits make this impossible; say so if not
                        raise _moved(dataclasses.replace(record, offset=at), part_offset)
                    for block in self._blobs.read_object(
                        self._key(record.upload_id, part_offset, size)
                    ):
                        out.write(block)
                    at += size
                if at != offset:
                    raise _moved(dataclasses.replace(record, offset=at), offset)
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            yield path
        finally:
            path.unlink(missing_ok=True)

    def remove(self, upload_id: str) -> None:
        """Delete the upload's objects (committed or not) and its list of chunks."""
        self._blobs.remove_under(self._folder(upload_id))
        self._catalog.delete_upload_parts(upload_id)

    def sync(self) -> None:
        """Removals are durable once the object store answered."""

    def sweep(self, pending: Callable[[], set[str]]) -> None:
        """Delete the objects of uploads that are not waiting for bytes (``pending()``
        gives those), left by a node killed between an upload's end and its clean-up."""
        listed = self._blobs.list_folders("uploads/")
        waiting = pending()  # after the listing: an upload started since is in it
        for upload_id in listed:
            if upload_id not in waiting:
                logger.info("removing the chunks of upload %s: it waits for none", upload_id)
                self.remove(upload_id)

    def last_write_s(self, record: UploadRecord) -> float | None:
        """When a chunk was last committed (the catalog's clock), if ever."""
        ns = self._catalog.last_upload_part_ns(record.upload_id)
        return None if ns is None else ns / 1e9

    def recover(self, pending: dict[str, UploadRecord], *_: Any) -> None:
        """Nothing is kept on this node: another node may be receiving these uploads."""
