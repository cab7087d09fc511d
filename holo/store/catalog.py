"""The store's metadata in SQLite: ``holo.sqlite3`` with uploads, studies, jobs and models.

One connection serves every thread, guarded by a lock (``check_same_thread=False``): the
gRPC server calls the store from a thread pool, and SQLite's own locking is for processes.
The journal is WAL with ``synchronous=FULL``, so a committed row survives a power cut, not
just a killed process. This module knows SQL and rows; the rules live in
:mod:`holo.store.store`.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from holo.errors import HoloError, NotFoundError, disk_full
from holo.store.private import PRIVATE_FILE
from holo.store.records import JobRecord, ModelRecord, StudyRecord, UploadRecord

__all__ = ["Catalog"]

# TABLES, KINDS, TOTALS_SQL, CatalogRecord, columns, quoted, to_row and from_row (records <->
# rows) are shared with holo.store.postgres: one mapping for both engines.

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2

# Version 2 (issue 18): who started a job, and the claim of the node running it.
JOB_LEASE_COLUMNS = (
    ("subject", "TEXT NOT NULL DEFAULT ''"),
    ("node", "TEXT NOT NULL DEFAULT ''"),
    ("lease", "TEXT NOT NULL DEFAULT ''"),
    ("lease_until_unix_ns", "INTEGER NOT NULL DEFAULT 0"),
    ("attempts", "INTEGER NOT NULL DEFAULT 0"),
)

_SCHEMA = """
CREATE TABLE uploads (
    upload_id TEXT PRIMARY KEY, case_id TEXT NOT NULL, name TEXT NOT NULL,
    size_bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, "offset" INTEGER NOT NULL,
    complete INTEGER NOT NULL, subject TEXT NOT NULL, created_unix_ns INTEGER NOT NULL
);
CREATE TABLE studies (
    study_id TEXT PRIMARY KEY, case_id TEXT NOT NULL, files TEXT NOT NULL,
    size_bytes INTEGER NOT NULL, summary TEXT NOT NULL, created_unix_ns INTEGER NOT NULL
);
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY, study_id TEXT NOT NULL REFERENCES studies(study_id),
    case_id TEXT NOT NULL, preset TEXT NOT NULL, series_uid TEXT NOT NULL,
    state TEXT NOT NULL, stage TEXT NOT NULL, fraction REAL NOT NULL, message TEXT NOT NULL,
    model_id TEXT NOT NULL, created_unix_ns INTEGER NOT NULL, finished_unix_ns INTEGER NOT NULL
);
CREATE TABLE models (
    model_id TEXT PRIMARY KEY, case_id TEXT NOT NULL,
    study_id TEXT NOT NULL REFERENCES studies(study_id), job_id TEXT NOT NULL,
    sha256 TEXT NOT NULL, size_bytes INTEGER NOT NULL, preset TEXT NOT NULL,
    manifest TEXT NOT NULL, created_unix_ns INTEGER NOT NULL
);
CREATE INDEX uploads_incomplete ON uploads(complete);
CREATE INDEX studies_case ON studies(case_id, created_unix_ns);
CREATE INDEX jobs_case ON jobs(case_id, created_unix_ns);
CREATE INDEX jobs_state ON jobs(state);
CREATE INDEX models_case ON models(case_id, created_unix_ns);
"""

#: The store's totals in one query (``holo serve --metrics``): each COUNT is over a table,
#: and the blob bytes count each content once (a file uploaded to two cases is one blob).
TOTALS_SQL = """
SELECT
  (SELECT COUNT(*) FROM studies) AS studies,
  (SELECT COUNT(*) FROM models) AS models,
  (SELECT COUNT(*) FROM jobs WHERE state = 'queued') AS queued,
  (SELECT COALESCE(SUM(size_bytes), 0) FROM (
     SELECT sha256, MAX(size_bytes) AS size_bytes FROM (
       SELECT sha256, size_bytes FROM uploads WHERE complete {complete}
       UNION ALL SELECT sha256, size_bytes FROM models
     ) AS named GROUP BY sha256
  ) AS blobs) AS blob_bytes
"""

CatalogRecord = TypeVar("CatalogRecord", bound=UploadRecord | StudyRecord | JobRecord | ModelRecord)

# table name, id column, and which columns hold JSON, per record type
TABLES: dict[type, tuple[str, str, frozenset[str]]] = {
    UploadRecord: ("uploads", "upload_id", frozenset()),
    StudyRecord: ("studies", "study_id", frozenset({"files", "summary"})),
    JobRecord: ("jobs", "job_id", frozenset()),
    ModelRecord: ("models", "model_id", frozenset({"manifest"})),
}
KINDS = {UploadRecord: "upload", StudyRecord: "study", JobRecord: "job", ModelRecord: "model"}


def columns(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def quoted(names: Iterable[str]) -> list[str]:
    return [f'"{name}"' for name in names]  # "offset" is an SQL keyword


def to_row(record: CatalogRecord) -> list[Any]:
    json_columns = TABLES[type(record)][2]
    return [
        json.dumps(value) if name in json_columns else value
        for name, value in ((n, getattr(record, n)) for n in columns(type(record)))
    ]


def from_row(cls: type[CatalogRecord], row: Mapping[str, Any]) -> CatalogRecord:
    json_columns = TABLES[cls][2]
    values: dict[str, Any] = {}
    for name in columns(cls):
        value = row[name]
        values[name] = json.loads(value) if name in json_columns else value
    if cls is StudyRecord:
        values["files"] = [(str(n), str(s)) for n, s in values["files"]]
    if cls is UploadRecord:
        values["complete"] = bool(values["complete"])
    return cls(**values)


def _insert(
    db: sqlite3.Connection, record: UploadRecord | StudyRecord | JobRecord | ModelRecord
) -> None:
    table = TABLES[type(record)][0]
    names = columns(type(record))
    sql = f"INSERT INTO {table} ({', '.join(quoted(names))}) VALUES ({', '.join('?' * len(names))})"
    db.execute(sql, to_row(record))


def _replace(
    db: sqlite3.Connection,
    cls: type[CatalogRecord],
    ident: str,
    change: Callable[[CatalogRecord], CatalogRecord],
) -> CatalogRecord:
    table, key, _ = TABLES[cls]
    assignments = ", ".join(f"{name} = ?" for name in quoted(columns(cls)))
    row = db.execute(f"SELECT * FROM {table} WHERE {key} = ?", (ident,)).fetchone()
    if row is None:
        raise NotFoundError(KINDS[cls], ident)
    updated = change(from_row(cls, row))
    db.execute(f"UPDATE {table} SET {assignments} WHERE {key} = ?", [*to_row(updated), ident])
    return updated


# Queued jobs first (a takeover can wait for a node that is idle), oldest first.
_CLAIM_SQL = (
    "SELECT * FROM jobs WHERE state = 'queued' "
    "OR ({take_over} AND state = 'running' AND lease_until_unix_ns < ?) "
    "ORDER BY state = 'running', created_unix_ns, rowid LIMIT 1"
)


class Catalog:
    """The SQLite database of one store.

    Parameters
    ----------
    path
        The database file (``<root>/holo.sqlite3``); created with its tables if missing.

    Raises
    ------
    HoloError
        If the database was made by a newer holo (a higher schema version).
    """

    shared = False  # one process has the file (holo.store.store holds a lock)

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        # Made 0600 before SQLite opens it: SQLite gives its -wal and -shm files the mode
        # of the database, whatever the umask (holo.store.private).
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
        # Autocommit mode: transactions are opened explicitly by `transaction`.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA busy_timeout = 10000")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute("PRAGMA foreign_keys = ON")
        with self.transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                # One statement at a time: executescript would commit the open transaction.
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
            if version < 2:  # a new store, or one made before jobs had leases
                for name, kind in JOB_LEASE_COLUMNS:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version > SCHEMA_VERSION:
                raise HoloError(
                    f"store database {path} has schema version {version}, newer than this "
                    f"holo's {SCHEMA_VERSION}; upgrade holo or use another store path"
                )
            # Added after schema version 1 shipped; IF NOT EXISTS makes it a no-op once made.
            db.execute(
                "CREATE INDEX IF NOT EXISTS uploads_case_sha ON uploads(case_id, sha256, complete)"
            )

    def close(self) -> None:
        """Close the connection; the catalog cannot be used afterwards."""
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock and an immediate (write) transaction; commit on success.

        Every write goes through here, so a full disk is turned into
        :class:`~holo.errors.DiskFullError` here, once, with nothing written.

        Raises
        ------
        DiskFullError
            SQLite reported SQLITE_FULL ("database or disk is full").
        """
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    # SQLite rolls back by itself after some errors (SQLITE_FULL among them);
                    # a ROLLBACK then would fail and hide the error. A failed COMMIT that
                    # left the transaction open must not leave it open for the next caller.
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as err:
                full = disk_full(err, self.path.parent)
                if full is None:
                    raise
                logger.warning("%s: the disk is full; nothing was written", self.path.name)
                raise full from err

    def insert(self, record: CatalogRecord) -> None:
        """Add a new record (its id must be new)."""
        with self.transaction() as db:
            _insert(db, record)

    def get(self, cls: type[CatalogRecord], ident: str) -> CatalogRecord:
        """Return the record with this id; :class:`NotFoundError` if there is none."""
        table, key, _ = TABLES[cls]
        with self._lock:
            row = self._db.execute(f"SELECT * FROM {table} WHERE {key} = ?", (ident,)).fetchone()
        if row is None:
            raise NotFoundError(KINDS[cls], ident)
        return from_row(cls, row)

    def list_case(self, cls: type[CatalogRecord], case_id: str) -> list[CatalogRecord]:
        """Return the case's records of one kind, newest first."""
        table = TABLES[cls][0]
        sql = f"SELECT * FROM {table} WHERE case_id = ? ORDER BY created_unix_ns DESC, rowid DESC"
        with self._lock:
            rows = self._db.execute(sql, (case_id,)).fetchall()
        return [from_row(cls, row) for row in rows]

    def replace(
        self, cls: type[CatalogRecord], ident: str, change: Callable[[CatalogRecord], CatalogRecord]
    ) -> CatalogRecord:
        """Read a record, pass it through ``change`` and write the result, in one transaction.

        ``change`` may raise to refuse the update; nothing is written then.
        """
        with self.transaction() as db:
            return _replace(db, cls, ident, change)

    def replace_and_insert(
        self,
        cls: type[CatalogRecord],
        ident: str,
        change: Callable[[CatalogRecord], CatalogRecord],
        record: UploadRecord | StudyRecord | JobRecord | ModelRecord,
    ) -> CatalogRecord:
        """:meth:`replace` one record and :meth:`insert` another, in one transaction: both
        are written or neither is (``change`` may raise to refuse; nothing is written then)."""
        with self.transaction() as db:
            updated = _replace(db, cls, ident, change)
            _insert(db, record)
        return updated

    def has_complete_upload(self, case_id: str, sha256: str) -> bool:
        """Tell whether the case holds a complete upload of this content."""
        sql = "SELECT 1 FROM uploads WHERE case_id = ? AND sha256 = ? AND complete = 1 LIMIT 1"
        with self._lock:
            return self._db.execute(sql, (case_id, sha256)).fetchone() is not None

    def delete_upload(self, upload_id: str) -> None:
        """Forget an upload (a no-op if it is already gone)."""
        with self.transaction() as db:
            db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))

    def find_incomplete_upload(
        self, *, case_id: str, subject: str, name: str, size_bytes: int, sha256: str
    ) -> UploadRecord | None:
        """The newest unfinished upload of this file by this caller, if there is one."""
        sql = (
            "SELECT * FROM uploads WHERE complete = 0 AND case_id = ? AND subject = ? "
            "AND name = ? AND size_bytes = ? AND sha256 = ? "
            "ORDER BY created_unix_ns DESC LIMIT 1"
        )
        with self._lock:
            row = self._db.execute(sql, (case_id, subject, name, size_bytes, sha256)).fetchone()
        return None if row is None else from_row(UploadRecord, row)

    def incomplete_uploads(self) -> list[UploadRecord]:
        """Return every upload still waiting for chunks."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM uploads WHERE complete = 0").fetchall()
        return [from_row(UploadRecord, row) for row in rows]

    def ping(self) -> None:
        """Nothing to ask: the file is local (a full disk is watched on its own)."""

    def clock_ns(self) -> int:
        """Now, by the clock leases are kept on: this machine's (one node has the file)."""
        return time.time_ns()

    def claim_job(
        self, now_ns: int, take_over: bool, change: Callable[[JobRecord], JobRecord]
    ) -> JobRecord | None:
        """Pass the oldest job a node may start through ``change`` and write the result, in
        one transaction; None if there is none.

        The job is the oldest queued one, or with ``take_over`` the oldest running one
        whose lease ran out before ``now_ns`` (its node stopped). One writer at a time
        (``BEGIN IMMEDIATE``), so two claims never take the same job.
        """
        with self.transaction() as db:
            row = db.execute(_CLAIM_SQL.format(take_over=int(take_over)), (now_ns,)).fetchone()
            if row is None:
                return None
            updated = change(from_row(JobRecord, row))
            return _replace(db, JobRecord, updated.job_id, lambda _old: updated)

    def totals(self) -> dict[str, int]:
        """Studies, models, queued jobs and blob bytes, in one read."""
        with self._lock:
            cursor = self._db.execute(TOTALS_SQL.format(complete="= 1"))
            row = cursor.fetchone()
            return {d[0]: int(v) for d, v in zip(cursor.description, row, strict=True)}

    def jobs_in_states(self, states: Iterable[str]) -> list[str]:
        """Return the ids of the jobs in any of ``states``, oldest first."""
        wanted = list(states)
        sql = (
            f"SELECT job_id FROM jobs WHERE state IN ({', '.join('?' * len(wanted))}) "
            "ORDER BY created_unix_ns, rowid"
        )
        with self._lock:
            return [row[0] for row in self._db.execute(sql, wanted).fetchall()]
