"""The audit log: who did what, in which case, when. One writer, off the event loop.

One node writes ``<data>/audit.jsonl`` (:class:`AuditFile`); nodes sharing a PostgreSQL
store write the ``audit`` table of the shared catalog instead (:class:`AuditTable`), one
row per record holding the same line, so a case's trail is one, whichever node served.

``<data>/audit.jsonl`` holds one JSON object per line, keys sorted: ``t_ns`` (wall clock,
ns), ``action``, ``subject`` (the token's subject, never a patient's name), ``case_id``,
and the ids the action is about (``session_id``, ``participant_id``, ``study_id``,
``job_id``, ``model_id``, ``recording_id``) plus a few plain facts (``role``, ``preset``,
``why``, ``failed``, ``frames_dropped``, ``pacs_node``: the name holo gives a PACS node,
never what the node holds); empty fields are left out.

Audited: joins and leaves, control changes and model loads (sessions), conversions started
and models published (jobs), recordings started and stopped, models pushed to a PACS.

A record is acknowledged once it is on disk: :meth:`AuditLog.write` returns after the line
is flushed and fsynced by the writer thread. The thread writes every record queued
meanwhile before one fsync (a procedure's start, when hundreds join within a second, costs
a few fsyncs, not hundreds), and the event loop never waits on the disk.

A write that fails (a full disk) fails every record of its batch, with
:class:`~holo.errors.DiskFullError` when the disk is full, and leaves no part of a line
behind: the file is cut back to where the batch began, so the log stays one whole JSON
object per line and the caller can refuse the audited action.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from holo.errors import disk_full

__all__ = ["NO_AUDIT", "AuditFile", "AuditLog", "AuditRecord", "AuditSink", "AuditTable", "Auditor"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audited action. Ids the action is not about stay empty (and are not written)."""

    action: str
    subject: str
    case_id: str
    session_id: str = ""
    participant_id: str = ""
    study_id: str = ""
    job_id: str = ""
    model_id: str = ""
    recording_id: str = ""
    pacs_node: str = ""  # the PACS node a study came from or a model went to (its name)
    role: str = ""
    preset: str = ""
    why: str = ""
    failed: str = ""
    frames_dropped: int = 0
    t_ns: int = 0  # 0: stamped when written

    def line(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if v}
        fields["t_ns"] = self.t_ns or time.time_ns()
        return json.dumps(fields, separators=(",", ":"), sort_keys=True)

    def stamped(self) -> AuditRecord:
        """This record with its time set (now, if it has none)."""
        return self if self.t_ns else replace(self, t_ns=time.time_ns())


class AuditSink(Protocol):
    """Where the writer thread puts each batch: all of it, durably, or none of it."""

    name: str  # for log lines: a file name or a database, never a path or a password

    def append(self, records: list[AuditRecord]) -> None:
        """Write ``records`` (stamped) durably, or raise with nothing written."""
        ...

    def close(self) -> None:
        """Release what the sink holds."""
        ...


class AuditFile:
    """Records as lines of a file, each batch fsynced; a failed batch is cut back off."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"the audit log {path.name}"
        # A raw descriptor, not a buffered file: what failed to reach the disk must not
        # linger in a buffer that close() would try (and fail) to write again.
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def append(self, records: list[AuditRecord]) -> None:
        data = "".join(record.line() + "\n" for record in records).encode()
        start = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as err:
            with contextlib.suppress(OSError):  # shrinking needs no space
                os.ftruncate(self._fd, start)
            full = disk_full(err, self.path.parent)
            if full is None:
                raise
            raise full from err

    def close(self) -> None:
        os.close(self._fd)


class AuditTable:
    """Records as rows of the shared catalog's ``audit`` table, each batch one transaction
    (:meth:`holo.store.postgres.PostgresCatalog.append_audit`)."""

    def __init__(self, catalog: Any) -> None:
        self._catalog = catalog
        self.name = f"the audit table of {catalog.where}"

    def append(self, records: list[AuditRecord]) -> None:
        self._catalog.append_audit([(r.t_ns, r.case_id, r.action, r.line()) for r in records])

    def close(self) -> None:
        """The catalog is the store's, closed with it."""


_Item = tuple[AuditRecord, concurrent.futures.Future[None]]


class Auditor(Protocol):
    """Where audited actions go: :class:`AuditLog`, or :data:`NO_AUDIT`."""

    async def record(self, action: str, subject: str, case_id: str, **about: str | int) -> None:
        """Record ``action`` by ``subject`` in ``case_id``; ``about`` are further
        :class:`AuditRecord` fields (the ids it is about)."""
        ...


class _NoAudit:
    """Audits nothing (a hub or job runner used without a server: tests, tools)."""

    async def record(self, action: str, subject: str, case_id: str, **about: str | int) -> None:
        return None


NO_AUDIT: Auditor = _NoAudit()


class AuditLog:
    """Append-only, durable: ``await log.write(record)`` returns once it is stored.

    Parameters
    ----------
    target
        The log file (created if missing, appended to otherwise), or a sink
        (:class:`AuditTable` for a shared store).
    """

    def __init__(self, target: Path | AuditSink) -> None:
        self._sink: AuditSink = AuditFile(target) if isinstance(target, Path) else target
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="holo-audit", daemon=True)
        self._lock = threading.Lock()  # a record is queued before close() or refused
        self._closed = False
        self._thread.start()

    def submit(self, record: AuditRecord) -> concurrent.futures.Future[None]:
        """Queue ``record``; the future completes once it is on disk (or fails with the
        error that kept it off)."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                done.set_exception(RuntimeError("the audit log is closed"))
            else:
                self._queue.put((record, done))
        return done

    async def write(self, record: AuditRecord) -> None:
        """Write ``record`` and wait (without blocking the loop) until it is durable."""
        await asyncio.wrap_future(self.submit(record))

    async def record(self, action: str, subject: str, case_id: str, **about: str | int) -> None:
        """:meth:`write` an :class:`AuditRecord` of these fields (an unknown one is a
        TypeError, as for the record itself)."""
        await self.write(AuditRecord(action, subject, case_id, **about))  # type: ignore[arg-type]

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            batch = [item]
            while True:  # everything queued meanwhile goes in the same fsync
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # close() after this batch
                    break
                batch.append(more)
            # Once running, a waiter's cancellation (a call given up, a stream closed
            # mid-join) no longer cancels its future, so resolving it below cannot raise
            # and kill this thread, which would leave every later waiter hanging.
            # A record whose waiter left is written all the same: the action was taken.
            waiting = [done for _, done in batch if done.set_running_or_notify_cancel()]
            try:
                self._sink.append([record.stamped() for record, _ in batch])
            except Exception as err:  # a full disk, a database gone: every waiter hears it
                logger.error("%s could not be written: %s", self._sink.name, err)
                for done in waiting:
                    done.set_exception(err)
            else:
                for done in waiting:
                    done.set_result(None)

    def close(self) -> None:
        """Write what is queued, then close the file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()
        self._sink.close()
