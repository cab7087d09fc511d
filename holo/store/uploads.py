"""Resumable uploads: their offsets, limits, checksums, expiry and crash recovery.

The bytes received so far wait in a parts keeper (:mod:`holo.store.parts`): ``.part``
files on one node, or objects in the shared object store when nodes share the catalog.
Either way a chunk is durable *before* the new offset is committed, so an offset the
client was told about is always there to resume from. The last chunk hashes the whole
file and, if it matches, moves it into the blob store.

A full disk: a new upload is refused unless it fits above the reserve
(:mod:`holo.store.space`). A chunk that meets a full disk anyway drops its upload, file
and row: the upload's own bytes are the space that is freed at once, so the database, the
audit log and every session can write again (a resumable upload would keep the disk full
until someone cleaned up). The client is told to upload the file again.

An upload outlives its client: announcing the same file again (same case, caller, name,
size and SHA-256) resumes the unfinished upload at its offset instead of starting over,
so a command run again after a crash or a server restart sends only what is missing.
What nobody resumes is expired (:meth:`Uploads.expire`): its row and ``.part`` file go
once nothing was written to it for the store's maximum age.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from holo.errors import (
    ChecksumError,
    DiskFullError,
    InvalidRequestError,
    LimitError,
    OffsetError,
    disk_full,
)
from holo.store.blobs import BlobDir, hash_file
from holo.store.parts import FileParts, ObjectParts
from holo.store.records import (
    UploadRecord,
    check_case_id,
    check_id,
    check_name,
    check_sha256,
    check_text,
    new_id,
)
from holo.store.space import DiskSpace

if TYPE_CHECKING:
    from holo.store.s3 import S3Blobs

__all__ = ["Uploads"]

logger = logging.getLogger(__name__)


class Uploads:
    """The uploads of one store; :class:`holo.store.Store` delegates to it.

    Parameters
    ----------
    parts
        Where unfinished uploads' bytes wait (:mod:`holo.store.parts`).
    catalog, blobs
        The store's catalog and blob store.
    space
        The store's disk and its reserve.
    max_upload_bytes
        The largest file :meth:`start` accepts.
    max_chunk_bytes
        The largest chunk :meth:`append` accepts.
    """

    def __init__(
        self,
        parts: FileParts | ObjectParts,
        catalog: Any,
        blobs: BlobDir | S3Blobs,
        space: DiskSpace,
        *,
        max_upload_bytes: int,
        max_chunk_bytes: int,
    ) -> None:
        self._parts = parts
        self._catalog = catalog
        self._blobs = blobs
        self._space = space
        self.max_upload_bytes = max_upload_bytes
        self.max_chunk_bytes = max_chunk_bytes
        # Chunks of one upload are written one at a time; a fixed set of locks, chosen by the
        # id's hash, bounds memory however many uploads are abandoned half-way.
        self._locks = [threading.Lock() for _ in range(64)]

    def _set(self, record: UploadRecord, offset: int, complete: bool) -> UploadRecord:
        new = dataclasses.replace(record, offset=offset, complete=complete)
        return self._catalog.replace(UploadRecord, record.upload_id, lambda _old: new)

    def recover(self) -> None:
        """Make the kept bytes agree with the catalog again, after a crash
        (:meth:`holo.store.parts.FileParts.recover`)."""
        pending = {record.upload_id: record for record in self._catalog.incomplete_uploads()}
        self._parts.recover(pending, self._blobs, self._set)

    def start(
        self, *, case_id: str, name: str, size_bytes: int, sha256: str, subject: str
    ) -> UploadRecord:
        """Validate and record a new upload; see :meth:`holo.store.Store.start_upload`."""
        check_case_id(case_id)
        check_name(name)
        check_sha256(sha256)
        check_text(subject, "subject")
        if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or size_bytes < 1:
            raise InvalidRequestError(
                f"upload {name!r}: size {size_bytes!r} is not allowed; announce the size in "
                "bytes, at least 1"
            )
        if size_bytes > self.max_upload_bytes:
            raise LimitError(
                f"upload {name!r}: {size_bytes} bytes is over the store's limit of "
                f"{self.max_upload_bytes} bytes; send a smaller file"
            )
        # Skip the bytes only if this case already holds this content: a hash is not proof
        # of holding a file, so content of another case must be sent in full (and is
        # stored once all the same: the finished file is verified, then dropped).
        complete = self._catalog.has_complete_upload(case_id, sha256) and self._blobs.has(sha256)
        # The caller's own unfinished upload of this very file resumes where it stands: the
        # bytes already there were sent by this caller, so no proof of holding them is lost.
        pending = (
            None
            if complete
            else self._catalog.find_incomplete_upload(
                case_id=case_id, subject=subject, name=name, size_bytes=size_bytes, sha256=sha256
            )
        )
        if pending is not None and self._parts.holds(pending.upload_id):
            logger.info(
                "upload %s resumed at %d of %d bytes",
                pending.upload_id,
                pending.offset,
                pending.size_bytes,
            )
            return pending
        record = UploadRecord(
            upload_id=new_id("up_"),
            case_id=case_id,
            name=name,
            size_bytes=size_bytes,
            sha256=sha256,
            offset=size_bytes if complete else 0,
            complete=complete,
            subject=subject,
            created_unix_ns=time.time_ns(),
        )
        if not complete:
            self._space.check_room(size_bytes, f"a new upload of {size_bytes} bytes")
        try:
            if not complete:
                # The file first: a crash before the row leaves a stray .part, removed on open.
                self._parts.create(record.upload_id)
            self._catalog.insert(record)
        except BaseException as err:
            self._parts.remove(record.upload_id)
            full = disk_full(err, self._space.root)
            if full is not None:
                raise full from err
            raise
        # The name is not logged: uploaded files are often named after the patient.
        logger.info(
            "upload %s started: case %s, %d bytes%s",
            record.upload_id,
            case_id,
            size_bytes,
            " (content already stored)" if complete else "",
        )
        return record

    def add_file(self, *, case_id: str, name: str, path: Path, subject: str) -> UploadRecord:
        """Record a file the server itself fetched (a PACS pull, a C-STORE) as a complete
        upload; see :meth:`holo.store.Store.add_file`."""
        check_case_id(case_id)
        check_name(name)
        check_text(subject, "subject")
        size = path.stat().st_size
        if size < 1:
            raise InvalidRequestError(f"{name}: the file is empty; it holds no DICOM to store")
        if size > self.max_upload_bytes:
            raise LimitError(
                f"{name}: {size} bytes is over the store's limit of {self.max_upload_bytes} "
                "bytes; raise --max-upload or leave this file out"
            )
        self._space.check_room(size, f"a file of {size} bytes")
        sha256 = self._blobs.put_file(path)
        record = UploadRecord(
            upload_id=new_id("up_"),
            case_id=case_id,
            name=name,
            size_bytes=size,
            sha256=sha256,
            offset=size,
            complete=True,
            subject=subject,
            created_unix_ns=time.time_ns(),
        )
        self._catalog.insert(record)
        return record

    def append(self, upload_id: str, offset: int, data: bytes) -> UploadRecord:
        """Check and store one chunk; see :meth:`holo.store.Store.append_chunk`."""
        check_id("upload", upload_id)
        with self._locks[hash(upload_id) % len(self._locks)]:
            record = self._catalog.get(UploadRecord, upload_id)
            size = record.size_bytes
            if record.complete:
                raise OffsetError(
                    f"upload {upload_id}: chunk at offset {offset}, but the upload is already "
                    f"complete ({size} bytes); send no more chunks",
                    expected=size,
                )
            if offset != record.offset:
                raise OffsetError(
                    f"upload {upload_id}: chunk at offset {offset}, but the upload stands at "
                    f"{record.offset}; resume from {record.offset}",
                    expected=record.offset,
                )
            if not data:
                raise InvalidRequestError(
                    f"upload {upload_id}: empty chunk at offset {offset}; send at least one byte"
                )
            if len(data) > self.max_chunk_bytes:
                raise LimitError(
                    f"upload {upload_id}: chunk of {len(data)} bytes is over the limit of "
                    f"{self.max_chunk_bytes} bytes; send smaller chunks"
                )
            if offset + len(data) > size:
                raise LimitError(
                    f"upload {upload_id}: chunk of {len(data)} bytes at offset {offset} would "
                    f"exceed the announced size of {size} bytes; send only the remaining "
                    f"{size - offset} bytes"
                )
            try:
                if offset + len(data) < size:
                    return self._parts.add(record, offset, data)
                return self._finish(record, offset, data)
            except (OSError, DiskFullError) as err:
                full = err if isinstance(err, DiskFullError) else disk_full(err, self._space.root)
                if full is None:
                    raise
                if self._parts.kept_elsewhere:
                    # The chunks are safe in the object store and this disk only held the
                    # file being checked: keep the upload for another node, or for later.
                    raise DiskFullError(
                        f"this server's disk is full: upload {upload_id} is kept at offset "
                        f"{offset}; resume it on another node, or here once space is freed "
                        f"in its data folder {full.folder!r}",
                        folder=full.folder,
                    ) from err
                self._drop(record)
                raise DiskFullError(
                    f"the server's disk is full: upload {upload_id} was dropped to free the "
                    f"{offset} bytes it held; free space in its data folder {full.folder!r}, "
                    "then upload the file again",
                    folder=full.folder,
                ) from err

    def _drop(self, record: UploadRecord) -> None:
        """Delete an upload that met a full disk: its file first, which frees the space the
        row's delete then needs. A crash in between leaves a row without a file, which
        :meth:`recover` restarts from offset 0."""
        self._parts.remove(record.upload_id)
        try:
            self._catalog.delete_upload(record.upload_id)
        except DiskFullError:
            logger.warning("upload %s: file dropped, row kept (the disk is full)", record.upload_id)
        logger.warning(
            "upload %s dropped at %d of %d bytes: the disk is full",
            record.upload_id,
            record.offset,
            record.size_bytes,
        )

    def _finish(self, record: UploadRecord, offset: int, data: bytes) -> UploadRecord:
        """Check the whole file with its last chunk; store it as a blob, or refuse it."""
        with self._parts.whole(record, offset, data) as whole:
            actual = hash_file(whole)
            if actual != record.sha256:
                # The row first: a crash in between leaves stray bytes, removed on open
                # (FileParts) or by the next expiry's sweep (ObjectParts).
                self._catalog.delete_upload(record.upload_id)
                self._parts.remove(record.upload_id)
                logger.warning("upload %s failed its checksum", record.upload_id)
                raise ChecksumError(
                    f"upload {record.upload_id} ({record.name!r}): the {record.size_bytes} "
                    f"bytes received hash to {actual}, not the announced {record.sha256}; "
                    "start the upload again"
                )
            self._blobs.adopt(whole, record.sha256)
        self._parts.sync()

        def complete(current: UploadRecord) -> UploadRecord:
            if current.complete or current.offset != offset:  # another node finished it
                raise OffsetError(
                    f"upload {record.upload_id}: chunk at offset {offset}, but the upload "
                    f"stands at {current.offset}"
                    + (" and is complete; send no more chunks" if current.complete else ""),
                    expected=current.size_bytes if current.complete else current.offset,
                )
            return dataclasses.replace(current, offset=current.size_bytes, complete=True)

        done = self._catalog.replace(UploadRecord, record.upload_id, complete)
        self._parts.remove(record.upload_id)
        logger.info("upload %s complete: blob %s", record.upload_id, record.sha256)
        return done

    def expire(self, max_age_s: float) -> int:
        """Forget unfinished uploads nothing was written to for ``max_age_s`` seconds and
        delete their ``.part`` files; returns how many went.

        An upload's age is since its last chunk (the ``.part`` file's modification time),
        not since it started: a large study on a slow link may take longer than the
        maximum age and still be alive.
        """
        now = self._catalog.clock_ns() / 1e9  # the clock chunks are stamped with
        expired = 0
        for record in self._catalog.incomplete_uploads():
            with self._locks[hash(record.upload_id) % len(self._locks)]:
                last = self._parts.last_write_s(record) or 0.0
                if now - max(last, record.created_unix_ns / 1e9) < max_age_s:
                    continue
                # The row first: a crash in between leaves stray bytes, removed on open
                # (FileParts) or by the next expiry's sweep (ObjectParts).
                self._catalog.delete_upload(record.upload_id)
                self._parts.remove(record.upload_id)
                expired += 1
        # Bytes of uploads that are gone or complete (a node killed between the commit and
        # the clean-up); the ids still waiting are read after the bytes are listed, so an
        # upload started meanwhile is never among the swept.
        self._parts.sweep(lambda: {r.upload_id for r in self._catalog.incomplete_uploads()})
        if expired:
            self._parts.sync()
            logger.info("expired %d unfinished upload(s) idle for over %.0f s", expired, max_age_s)
        return expired

    def get(self, upload_id: str) -> UploadRecord:
        """Return an upload as it stands (:class:`NotFoundError` if there is none)."""
        return self._catalog.get(UploadRecord, check_id("upload", upload_id))
