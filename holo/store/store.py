"""The asset store: DICOM uploads, studies, jobs and models, in one folder by default.

By default everything is under one folder (below). Nodes that share the store keep the
metadata in PostgreSQL (``catalog=``, :mod:`holo.store.postgres`) and the blobs and
unfinished uploads in an S3 object store (``blobs=``, :mod:`holo.store.s3`,
:mod:`holo.store.parts`); the folder then holds the node's blob cache and scratch space.

Layout under the store root::

    holo.sqlite3        metadata (WAL journal, synchronous=FULL)
    holo.lock           held (flock) by the one process that has the store open
    blobs/ab/cdef...    content-addressed files, named by their SHA-256 (holo.store.blobs)
    uploads/<id>.part   the bytes received so far of each unfinished upload (holo.store.uploads)
    tmp/                temporary files, cleared when the store opens

A malformed id names nothing, so every getter raises :class:`~holo.errors.NotFoundError` for
it, never a ``KeyError`` or an SQLite error. The store does not know who is calling: a
getter returns an object whatever its case, and the servicers compare that case with the
caller's token (PERMISSION_DENIED when they differ, :mod:`holo.server.servicers`). The
methods that are given a case (:meth:`Store.create_study`, :meth:`Store.create_job`,
:meth:`Store.add_model`) refuse another case's upload, study or job as not found.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

from holo.audit import AuditTable
from holo.errors import HoloError, InvalidRequestError, NotFoundError, UnavailableError
from holo.store.blobs import BlobDir
from holo.store.catalog import Catalog
from holo.store.parts import FileParts, ObjectParts
from holo.store.private import PRIVATE_DIR, make_private
from holo.store.records import (
    INTERRUPTED_MESSAGE,
    TERMINAL_JOB_STATES,
    JobRecord,
    ModelRecord,
    StudyRecord,
    UploadRecord,
    advance_job,
    check_case_id,
    check_id,
    check_json,
    check_lease,
    check_text,
    job_changes,
    new_id,
    release_job,
    take_job,
)
from holo.store.s3 import S3Blobs
from holo.store.space import DEFAULT_MIN_FREE, DiskSpace
from holo.store.uploads import Uploads

__all__ = ["Store"]

logger = logging.getLogger(__name__)


class Store:
    """The asset store under one folder; safe to call from several threads of one process.

    Parameters
    ----------
    root
        The store folder; created with its sub-folders and tables if missing. With
        ``catalog`` and ``blobs`` elsewhere it holds this node's blob cache and scratch.
    catalog
        ``postgresql://USER@HOST:PORT/DB`` for metadata several nodes share
        (:mod:`holo.store.postgres`); empty (default) for SQLite in ``root``.
    blobs
        ``s3://BUCKET/PREFIX`` for blobs in an S3-compatible object store, cached in
        ``root`` (:mod:`holo.store.s3`); empty (default) for the folder ``root/blobs``.
        Required with a PostgreSQL ``catalog``.
    s3_endpoint, s3_ca
        The object store's ``https://HOST:PORT`` (default ``HOLO_S3_ENDPOINT``) and the
        CA that signed its certificate, a PEM file (default ``HOLO_S3_CA``; else the
        system's CAs).
    max_upload_bytes
        The largest file :meth:`start_upload` accepts (default 8 GiB).
    min_free
        Free space new uploads must leave on the store's disk: bytes, a size (``"512M"``)
        or a share (``"5%"``); by default the smaller of 1 GiB and 5%
        (:mod:`holo.store.space` says why).

    Raises
    ------
    HoloError
        If another process (or another open ``Store`` in this one) holds the store.
    InvalidRequestError
        A malformed ``catalog`` or ``blobs`` URL, or a PostgreSQL catalog without ``blobs``.
    UnavailableError
        The PostgreSQL server or the object store does not answer.

    Notes
    -----
    The folder and everything in it are made private to this user (0700 folders, 0600
    files; :mod:`holo.store.private`). Opening recovers from a crash: leftover ``tmp/``
    files are deleted, as are ``.part`` files without an unfinished upload; a ``.part``
    file longer than its recorded offset (killed between the write and the commit) is cut
    back to the offset; an upload whose ``.part`` file is gone and whose blob is stored
    (killed after the file was moved into place, before the commit) is marked complete.
    """

    MAX_CHUNK_BYTES = 1 << 20

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        catalog: str = "",
        blobs: str = "",
        s3_endpoint: str = "",
        s3_ca: str = "",
        max_upload_bytes: int = 8 << 30,
        min_free: str | int = DEFAULT_MIN_FREE,
    ) -> None:
        if isinstance(max_upload_bytes, bool) or not isinstance(max_upload_bytes, int):
            raise InvalidRequestError(f"max_upload_bytes must be an int, not {max_upload_bytes!r}")
        if max_upload_bytes < 1:
            raise InvalidRequestError(
                f"max_upload_bytes must be at least 1, not {max_upload_bytes}"
            )
        self.root = Path(root).absolute()  # paths it hands out hold in any working folder
        self.max_upload_bytes = max_upload_bytes
        self.root.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        make_private(self.root)  # patient data at rest: for the server's user only
        self.space = DiskSpace(self.root, min_free)
        with ExitStack() as undo:  # on a failure, release what was already opened
            self._lock_fd = self._lock_root()
            undo.callback(os.close, self._lock_fd)
            self._catalog = _open_catalog(catalog, self.root)
            undo.callback(self._catalog.close)
            local = BlobDir(self.root / "blobs", self.root / "tmp")
            self._blobs: BlobDir | S3Blobs = local
            if blobs:
                self._blobs = S3Blobs(blobs, local, endpoint=s3_endpoint, ca_file=s3_ca)
            elif self._catalog.shared:
                raise InvalidRequestError(
                    "a PostgreSQL store is shared by several nodes, which must share the "
                    "blobs too: give --blobs s3://BUCKET/PREFIX as well"
                )
            parts: FileParts | ObjectParts = FileParts(self.root / "uploads", self._catalog)
            if self._catalog.shared:
                assert isinstance(self._blobs, S3Blobs)
                parts = ObjectParts(self._blobs, self._catalog)
            self._uploads = Uploads(
                parts,
                self._catalog,
                self._blobs,
                self.space,
                max_upload_bytes=max_upload_bytes,
                max_chunk_bytes=self.MAX_CHUNK_BYTES,
            )
            self._blobs.clear_tmp()
            self._uploads.recover()
            undo.pop_all()
        self._closed = False

    @property
    def shared(self) -> bool:
        """True when other nodes share this store's catalog (PostgreSQL)."""
        return self._catalog.shared

    def audit_table(self) -> AuditTable | None:
        """Where the audit trail goes when nodes share the catalog: its ``audit`` table
        (one trail for a case, whichever node served); None for one node."""
        return AuditTable(self._catalog) if self._catalog.shared else None

    def engines_down(self) -> list[str]:
        """What of the store does not answer now: one line per engine (the PostgreSQL
        catalog, the object store), empty when all do or when everything is local."""
        down = []
        engines: list[Any] = [self._catalog]
        if isinstance(self._blobs, S3Blobs):
            engines.append(self._blobs)
        for engine in engines:
            try:
                engine.ping()
            except UnavailableError as err:
                down.append(err.message)
        return down

    def totals(self) -> dict[str, int]:
        """What the store holds, for monitoring: ``studies``, ``models``, ``queued`` (jobs
        waiting for a worker) and ``blob_bytes`` (each content the catalog names, once).
        One catalog query, however many files the blobs hold."""
        return self._catalog.totals()

    @property
    def tmp_dir(self) -> Path:
        """The store's ``tmp/`` folder, for scratch files and folders of the caller's own.

        It is on the store's file system and emptied whenever a store opens, so nothing
        left there by a crash outlives the next start.
        """
        return self._blobs.tmp

    def _lock_root(self) -> int:
        # Recovery truncates and deletes .part files, which must not happen under a live
        # writer; flock is released by the kernel when the holder dies, even by SIGKILL.
        fd = os.open(self.root / "holo.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise HoloError(
                f"store {self.root} is already open in another process or Store object; "
                "close that one first or use another store path"
            ) from None
        return fd

    def close(self) -> None:
        """Close the database and release the store; calling it twice is harmless."""
        if self._closed:
            return
        self._closed = True
        self._catalog.close()
        os.close(self._lock_fd)

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- blobs ---------------------------------------------------------------------------

    def has_blob(self, sha256: str) -> bool:
        """Tell whether a blob is stored; a malformed digest is simply absent."""
        return self._blobs.has(sha256)

    def blob_path(self, sha256: str) -> Path:
        """Return a stored blob's file path (read it, never write it).

        Raises
        ------
        NotFoundError
            ``("blob", sha256)`` if no such blob is stored.
        """
        return self._blobs.path(sha256)

    def put_blob(self, data: bytes) -> str:
        """Store ``data`` (once) and return its SHA-256 in lowercase hex."""
        return self._blobs.put_bytes(data)

    def put_blob_file(self, path: Path) -> str:
        """Copy a file into the blob store (once) and return its SHA-256; ``path`` is kept."""
        return self._blobs.put_file(Path(path))

    # -- uploads -------------------------------------------------------------------------

    def start_upload(
        self, *, case_id: str, name: str, size_bytes: int, sha256: str, subject: str
    ) -> UploadRecord:
        """Announce a file; chunks then go to :meth:`append_chunk`, starting at offset 0.

        If the same caller (``subject``) has an unfinished upload of this file in this case
        (same name, size and SHA-256), that upload is returned as it stands, to resume at
        its offset. If the same case already holds a complete upload of this SHA-256, the
        upload is complete at once and the client sends nothing. Otherwise the bytes must be sent,
        even if another case holds the same content (announcing a hash proves nothing, and
        a study made of the upload would read that case's file); identical content is still
        stored once, since the finished file is verified and then dropped.

        Raises
        ------
        InvalidRequestError
            A malformed case id, name, SHA-256 or size.
        LimitError
            ``size_bytes`` is over the store's ``max_upload_bytes``.
        DiskFullError
            ``size_bytes`` does not fit on the disk above the reserve (``min_free``).
        """
        return self._uploads.start(
            case_id=case_id, name=name, size_bytes=size_bytes, sha256=sha256, subject=subject
        )

    def append_chunk(self, upload_id: str, offset: int, data: bytes) -> UploadRecord:
        """Add the next chunk of an upload and return the upload as it now stands.

        The chunk is on disk (fsynced) before the new offset is recorded. The last chunk
        checks the whole file's SHA-256 and moves it into the blob store.

        Raises
        ------
        NotFoundError
            No upload with this id.
        OffsetError
            ``offset`` is not where the upload stands, or the upload is already complete;
            ``expected`` says where to resume.
        InvalidRequestError
            ``data`` is empty.
        LimitError
            The chunk is over :attr:`MAX_CHUNK_BYTES` or runs past the announced size.
        ChecksumError
            The finished file does not hash to the announced SHA-256; the upload is gone.
        DiskFullError
            The disk is full: the upload is gone, its bytes freed (start it again later).
        """
        return self._uploads.append(upload_id, offset, data)

    def add_file(self, *, case_id: str, name: str, path: Path, subject: str) -> UploadRecord:
        """Store a file the server fetched itself (a study pulled from a PACS, or sent to
        its C-STORE SCP) as a complete upload of ``case_id``, ready for :meth:`create_study`:
        a study made of such files is the same kind as one a client uploaded. ``path`` is
        copied (once, by content) and kept.

        Raises
        ------
        InvalidRequestError
            A malformed case id or name, or an empty file.
        LimitError
            The file is over the store's ``max_upload_bytes``.
        DiskFullError
            The file does not fit above the disk's reserve.
        """
        return self._uploads.add_file(case_id=case_id, name=name, path=Path(path), subject=subject)

    def get_upload(self, upload_id: str) -> UploadRecord:
        """Return an upload as it stands (:class:`NotFoundError` if there is none)."""
        return self._uploads.get(upload_id)

    def expire_uploads(self, max_age_s: float) -> int:
        """Forget unfinished uploads idle for ``max_age_s`` seconds and reclaim their
        ``.part`` files (:meth:`holo.store.uploads.Uploads.expire`); how many went."""
        return self._uploads.expire(max_age_s)

    # -- studies -------------------------------------------------------------------------

    def create_study(
        self, *, case_id: str, upload_ids: Sequence[str], summary: dict[str, Any]
    ) -> StudyRecord:
        """Register complete uploads of one case as a study.

        Parameters
        ----------
        case_id
            The case; every upload must belong to it.
        upload_ids
            The uploads, in the order the files are to be listed. Names may repeat (DICOM
            exports reuse base names across folders); the blobs tell the files apart.
        summary
            JSON-able description of the study (series list, UIDs, patient identity).

        Raises
        ------
        NotFoundError
            ``("upload", id)`` for an upload that does not exist or is in another case.
        InvalidRequestError
            No uploads, one listed twice, one not complete yet, or a summary that is not JSON.
        """
        check_case_id(case_id)
        if isinstance(upload_ids, str | bytes) or not upload_ids:
            raise InvalidRequestError(
                f"case {case_id}: a study needs a list of at least one upload id"
            )
        if len(set(upload_ids)) != len(upload_ids):
            raise InvalidRequestError(f"case {case_id}: an upload is listed twice; list each once")
        files: list[tuple[str, str]] = []
        size = 0
        for upload_id in upload_ids:
            upload = self._catalog.get(UploadRecord, check_id("upload", upload_id))
            if upload.case_id != case_id:
                raise NotFoundError("upload", upload_id)  # don't reveal other cases' ids
            if not upload.complete:
                raise InvalidRequestError(
                    f"upload {upload_id} ({upload.name!r}) stands at {upload.offset} of "
                    f"{upload.size_bytes} bytes; finish it before creating the study"
                )
            files.append((upload.name, upload.sha256))
            size += upload.size_bytes
        record = StudyRecord(
            study_id=new_id("st_"),
            case_id=case_id,
            files=files,
            size_bytes=size,
            summary=check_json(summary, "study summary"),
            created_unix_ns=time.time_ns(),
        )
        self._catalog.insert(record)
        logger.info("study %s created: case %s, %d file(s)", record.study_id, case_id, len(files))
        return record

    def get_study(self, study_id: str) -> StudyRecord:
        """Return a study (:class:`NotFoundError` if there is none)."""
        return self._catalog.get(StudyRecord, check_id("study", study_id))

    def list_studies(self, case_id: str) -> list[StudyRecord]:
        """Return the case's studies, newest first."""
        return self._catalog.list_case(StudyRecord, check_case_id(case_id))

    def study_files(self, study_id: str) -> list[tuple[str, Path]]:
        """Return a study's ``(name, blob path)`` pairs in upload order."""
        return [(name, self._blobs.path(sha)) for name, sha in self.get_study(study_id).files]

    def _case_study(self, case_id: str, study_id: str) -> StudyRecord:
        study = self.get_study(study_id)
        if study.case_id != check_case_id(case_id):
            raise NotFoundError("study", study_id)  # don't reveal other cases' ids
        return study

    # -- jobs ----------------------------------------------------------------------------

    def create_job(
        self, *, study_id: str, case_id: str, preset: str, series_uid: str = "", subject: str = ""
    ) -> JobRecord:
        """Record a new conversion of one of the case's studies, in state ``"queued"``;
        ``subject`` (who asked) goes to the audit records of whichever node runs it."""
        record = self.new_job(
            study_id=study_id, case_id=case_id, preset=preset, series_uid=series_uid,
            subject=subject,
        )  # fmt: skip
        return self.queue_job(record)

    def new_job(
        self, *, study_id: str, case_id: str, preset: str, series_uid: str = "", subject: str = ""
    ) -> JobRecord:
        """A conversion checked and given its id, not yet stored: what :meth:`queue_job`
        stores, once the caller has recorded it elsewhere (the runner audits it first, so
        no node can start a conversion that is not in the audit trail)."""
        self._case_study(case_id, study_id)
        return JobRecord(
            job_id=new_id("job_"),
            study_id=study_id,
            case_id=case_id,
            preset=check_text(preset, "preset", required=True),
            series_uid=check_text(series_uid, "series_uid"),
            state="queued",
            stage="",
            fraction=0.0,
            message="",
            model_id="",
            created_unix_ns=time.time_ns(),
            finished_unix_ns=0,
            subject=check_text(subject, "subject"),
        )

    def queue_job(self, record: JobRecord) -> JobRecord:
        """Store a job made by :meth:`new_job`, queued: from now on a node may start it."""
        self._catalog.insert(record)
        logger.info("job %s queued: study %s, preset %s", record.job_id, record.study_id,
                    record.preset)  # fmt: skip
        return record

    def update_job(
        self,
        job_id: str,
        *,
        state: str | None = None,
        stage: str | None = None,
        fraction: float | None = None,
        message: str | None = None,
        model_id: str | None = None,
        lease: str | None = None,
    ) -> JobRecord:
        """Change a job's state or progress; the fields left ``None`` keep their values.

        Reaching ``"succeeded"``, ``"failed"`` or ``"cancelled"`` sets ``finished_unix_ns``.
        A finished job is final: any later update raises :class:`InvalidRequestError`, which
        also tells a worker that its job was cancelled meanwhile. A worker passes its
        ``lease`` (:meth:`claim_job`): :class:`~holo.errors.LeaseLostError` if another node
        has taken the job over (or it finished) meanwhile.
        """
        check_id("job", job_id)
        changes = job_changes(job_id, state=state, stage=stage, fraction=fraction, message=message)
        if model_id is not None:
            if self.get_model(model_id).job_id != job_id:
                raise InvalidRequestError(
                    f"job {job_id}: model {model_id} was made by another job; pass this job's model"
                )
            changes["model_id"] = model_id

        def change(job: JobRecord) -> JobRecord:
            if lease is not None:
                check_lease(job, lease)
            return advance_job(job, changes)

        record = self._catalog.replace(JobRecord, job_id, change)
        if state is not None:
            logger.info("job %s %s", job_id, state)
        return record

    def get_job(self, job_id: str) -> JobRecord:
        """Return a job (:class:`NotFoundError` if there is none)."""
        return self._catalog.get(JobRecord, check_id("job", job_id))

    def list_jobs(self, case_id: str) -> list[JobRecord]:
        """Return the case's jobs, newest first."""
        return self._catalog.list_case(JobRecord, check_case_id(case_id))

    def claim_job(
        self, *, node: str, lease_s: float, take_over: bool, max_attempts: int = 3
    ) -> JobRecord | None:
        """Take the oldest queued job for ``node`` and return it running, or None.

        The claim holds for ``lease_s`` seconds on the catalog's clock; the node renews it
        (:meth:`renew_job`) while it converts, and passes the record's ``lease`` to every
        update. With ``take_over`` (nodes sharing a catalog), a running job whose lease ran
        out (its node stopped) is taken too, once no job is queued; one that was started
        ``max_attempts`` times is failed instead (it may be what stops the nodes).
        """
        lease_ns = int(lease_s * 1e9)
        while True:
            now = self._catalog.clock_ns()

            def take(job: JobRecord, now: int = now) -> JobRecord:
                return take_job(
                    job, node=node, now_ns=now, lease_ns=lease_ns, max_attempts=max_attempts
                )

            job = self._catalog.claim_job(now, take_over, take)
            if job is None or job.state == "running":
                if job is not None:
                    logger.info(
                        "job %s claimed by node %s (attempt %d)", job.job_id, node, job.attempts
                    )
                return job
            logger.warning("job %s failed: %s", job.job_id, job.message)

    def renew_job(self, job_id: str, lease: str, lease_s: float) -> JobRecord:
        """Extend ``lease`` on a running job by ``lease_s`` seconds from now.

        Raises
        ------
        LeaseLostError
            The lease no longer holds (taken over, cancelled or finished meanwhile).
        """
        now = self._catalog.clock_ns()

        def renew(job: JobRecord) -> JobRecord:
            return dataclasses.replace(
                check_lease(job, lease), lease_until_unix_ns=now + int(lease_s * 1e9)
            )

        return self._catalog.replace(JobRecord, check_id("job", job_id), renew)

    def release_job(self, job_id: str, lease: str) -> JobRecord:
        """Queue a running job again for another node (this one is stopping gracefully).

        Raises
        ------
        LeaseLostError
            The lease no longer holds.
        """
        record = self._catalog.replace(
            JobRecord, check_id("job", job_id), lambda job: release_job(check_lease(job, lease))
        )
        logger.info("job %s handed back to the queue", job_id)
        return record

    def fail_interrupted_jobs(self, message: str = INTERRUPTED_MESSAGE) -> list[str]:
        """Mark every queued or running job failed with ``message`` (one node: at start,
        and for the queued ones at a stop); return their ids."""

        def change(job: JobRecord) -> JobRecord:
            if job.state in TERMINAL_JOB_STATES:
                return job  # finished meanwhile
            failed.append(job.job_id)
            return dataclasses.replace(
                job, state="failed", message=message, finished_unix_ns=time.time_ns()
            )

        failed: list[str] = []
        for job_id in self._catalog.jobs_in_states(("queued", "running")):
            self._catalog.replace(JobRecord, job_id, change)
        if failed:
            logger.warning("marked %d interrupted job(s) failed", len(failed))
        return failed

    # -- models --------------------------------------------------------------------------

    def add_model(
        self,
        *,
        case_id: str,
        study_id: str,
        job_id: str,
        sha256: str,
        preset: str,
        manifest: dict[str, Any],
        lease: str | None = None,
    ) -> ModelRecord:
        """Publish a stored GLB blob as the model a job made, and mark the job succeeded.

        Both happen in one transaction: a model is listed only if its job succeeded, so
        a job cancelled (or failed) meanwhile never publishes one, and a crash in between
        leaves neither. The job gets ``model_id``, stage ``"done"``, fraction 1 and a
        message naming the model. With ``lease``, only while it holds the job: a node
        whose job was taken over publishes nothing (:class:`~holo.errors.LeaseLostError`),
        so a job publishes one model however many nodes started it.

        Raises
        ------
        NotFoundError
            The study or job is not in the case, or the blob is not stored.
        InvalidRequestError
            The job converts another study, is already finished (succeeded, failed or
            cancelled), or the manifest is not JSON.
        """
        self._case_study(case_id, study_id)
        job = self.get_job(job_id)
        if job.case_id != case_id:
            raise NotFoundError("job", job_id)
        if job.study_id != study_id:
            raise InvalidRequestError(
                f"job {job_id} converts study {job.study_id}, not {study_id}; pass its own study"
            )
        record = ModelRecord(
            model_id=new_id("mdl_"),
            case_id=case_id,
            study_id=study_id,
            job_id=job_id,
            sha256=sha256,
            size_bytes=self._blobs.size(sha256),
            preset=check_text(preset, "preset", required=True),
            manifest=check_json(manifest, "model manifest"),
            created_unix_ns=time.time_ns(),
        )
        changes = job_changes(
            job_id,
            state="succeeded",
            stage="done",
            fraction=1.0,
            message=f"model {record.model_id}: {record.size_bytes} bytes",
        )
        changes["model_id"] = record.model_id
        changes["lease_until_unix_ns"] = 0

        def succeed(current: JobRecord) -> JobRecord:
            if lease is not None:
                check_lease(current, lease)
            return advance_job(current, changes)

        # Refusing (a finished job, a lost lease) rolls the model's insert back too.
        self._catalog.replace_and_insert(JobRecord, job_id, succeed, record)
        logger.info("model %s stored: job %s succeeded, blob %s", record.model_id, job_id, sha256)
        return record

    def get_model(self, model_id: str) -> ModelRecord:
        """Return a model (:class:`NotFoundError` if there is none)."""
        return self._catalog.get(ModelRecord, check_id("model", model_id))

    def list_models(self, case_id: str) -> list[ModelRecord]:
        """Return the case's models, newest first."""
        return self._catalog.list_case(ModelRecord, check_case_id(case_id))


def _open_catalog(url: str, root: Path) -> Any:
    """The catalog ``url`` names: SQLite in ``root`` when empty, else PostgreSQL."""
    if not url:
        return Catalog(root / "holo.sqlite3")
    if url.startswith(("postgresql://", "postgres://")):
        from holo.store.postgres import PostgresCatalog

        return PostgresCatalog(url)
    raise InvalidRequestError(
        "the store is a folder, or postgresql://USER@HOST:PORT/DATABASE; "
        f"{url.split('://')[0]}:// is not a store this holo knows"
    )
