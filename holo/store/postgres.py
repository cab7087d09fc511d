"""The store's metadata in PostgreSQL: the catalog several nodes share (issue 18).

The same tables, records and methods as :class:`holo.store.catalog.Catalog` (SQLite, the
one-node default), so :mod:`holo.store.store` keeps its rules and does not know which it
has. What differs, and why:

- A read-modify-write (:meth:`PostgresCatalog.replace`) locks its row (``SELECT ... FOR
  UPDATE``): two nodes advancing the same job take turns instead of one losing its write.
  SQLite gets the same from ``BEGIN IMMEDIATE`` (one writer per file).
- Ties in "newest first" are broken by a ``seq`` column (SQLite's ``rowid``).
- The schema is made under an advisory lock, so nodes starting together make it once.
- A server that does not answer is :class:`~holo.errors.UnavailableError` naming the
  database (its host and name, never the password), and the next call connects again.

One connection per catalog, guarded by a lock, as the SQLite catalog: the server calls the
store from a thread pool, and its calls are short.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from holo.errors import HoloError, NotFoundError, UnavailableError
from holo.extras import need
from holo.store.catalog import (
    JOB_LEASE_COLUMNS,
    KINDS,
    SCHEMA_VERSION,
    TABLES,
    TOTALS_SQL,
    CatalogRecord,
    columns,
    from_row,
    quoted,
    to_row,
)
from holo.store.records import JobRecord, UploadRecord

__all__ = ["PostgresCatalog"]

logger = logging.getLogger(__name__)

# The SQLite schema's tables with PostgreSQL's types; `seq` orders rows inserted in the same
# nanosecond. JSON columns stay TEXT: the records hold them as the SQLite catalog does.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS holo_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY, case_id TEXT NOT NULL, name TEXT NOT NULL,
    size_bytes BIGINT NOT NULL, sha256 TEXT NOT NULL, "offset" BIGINT NOT NULL,
    complete BOOLEAN NOT NULL, subject TEXT NOT NULL, created_unix_ns BIGINT NOT NULL,
    seq BIGSERIAL
);
CREATE TABLE IF NOT EXISTS studies (
    study_id TEXT PRIMARY KEY, case_id TEXT NOT NULL, files TEXT NOT NULL,
    size_bytes BIGINT NOT NULL, summary TEXT NOT NULL, created_unix_ns BIGINT NOT NULL,
    seq BIGSERIAL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, study_id TEXT NOT NULL REFERENCES studies(study_id),
    case_id TEXT NOT NULL, preset TEXT NOT NULL, series_uid TEXT NOT NULL,
    state TEXT NOT NULL, stage TEXT NOT NULL, fraction DOUBLE PRECISION NOT NULL,
    message TEXT NOT NULL, model_id TEXT NOT NULL, created_unix_ns BIGINT NOT NULL,
    finished_unix_ns BIGINT NOT NULL, seq BIGSERIAL
);
CREATE TABLE IF NOT EXISTS models (
    model_id TEXT PRIMARY KEY, case_id TEXT NOT NULL,
    study_id TEXT NOT NULL REFERENCES studies(study_id), job_id TEXT NOT NULL,
    sha256 TEXT NOT NULL, size_bytes BIGINT NOT NULL, preset TEXT NOT NULL,
    manifest TEXT NOT NULL, created_unix_ns BIGINT NOT NULL, seq BIGSERIAL
);
CREATE TABLE IF NOT EXISTS upload_parts (
    upload_id TEXT NOT NULL REFERENCES uploads(upload_id) ON DELETE CASCADE,
    "offset" BIGINT NOT NULL, size_bytes BIGINT NOT NULL, written_unix_ns BIGINT NOT NULL,
    PRIMARY KEY (upload_id, "offset")
);
CREATE TABLE IF NOT EXISTS audit (
    seq BIGSERIAL PRIMARY KEY, t_ns BIGINT NOT NULL, case_id TEXT NOT NULL,
    action TEXT NOT NULL, line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_case ON audit(case_id, t_ns);
CREATE INDEX IF NOT EXISTS uploads_incomplete ON uploads(complete);
CREATE INDEX IF NOT EXISTS uploads_case_sha ON uploads(case_id, sha256, complete);
CREATE INDEX IF NOT EXISTS studies_case ON studies(case_id, created_unix_ns);
CREATE INDEX IF NOT EXISTS jobs_case ON jobs(case_id, created_unix_ns);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS models_case ON models(case_id, created_unix_ns)
"""
# Queued jobs first (a takeover can wait for a node that is idle), oldest first.
_CLAIM_SQL = (
    "SELECT * FROM jobs WHERE state = 'queued' "
    "OR (%s AND state = 'running' AND lease_until_unix_ns < %s) "
    "ORDER BY state = 'running', created_unix_ns, seq LIMIT 1 FOR UPDATE SKIP LOCKED"
)
# pg_advisory_xact_lock key for making the schema: "holo" in ASCII.
_SCHEMA_LOCK = 0x686F6C6F
# Seconds to wait for the server before a call is UNAVAILABLE: a node failing over or
# restarting answers within seconds, and a caller (a gRPC handler) should not hang longer.
_CONNECT_TIMEOUT_S = 5
# A statement (a row lock waited for included) or unacknowledged data this old means the
# server is gone: holo's statements take milliseconds. Keepalives probe an idle line.
_DEAD_AFTER_S = 10
_KEEPALIVE_S = 3


class PostgresCatalog:
    """The catalog in the PostgreSQL database at ``url`` (``postgresql://user@host/db``).

    Raises
    ------
    UnavailableError
        If the server does not answer.
    HoloError
        If the database was made by a newer holo (a higher schema version).
    """

    shared = True  # every node of a cluster opens the same database

    def __init__(self, url: str) -> None:
        need("server", "psycopg", feature="a PostgreSQL store")
        import psycopg

        self._psycopg = psycopg
        self.url = url
        self.where = _where(url)
        self._lock = threading.RLock()
        self._conn: Any = None
        with self.transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _SCHEMA.split(";"):
                db.execute(statement)
            row = db.execute("SELECT version FROM holo_schema").fetchone()
            if row is not None and row["version"] > SCHEMA_VERSION:
                raise HoloError(
                    f"store database {self.where} has schema version {row['version']}, newer "
                    f"than this holo's {SCHEMA_VERSION}; upgrade holo or use another database"
                )
            for name, kind in JOB_LEASE_COLUMNS:  # schema version 2
                kind = kind.replace("INTEGER", "BIGINT")  # ns since the epoch need 64 bits
                db.execute(f"ALTER TABLE jobs ADD COLUMN IF NOT EXISTS {name} {kind}")
            db.execute("DELETE FROM holo_schema")
            db.execute("INSERT INTO holo_schema VALUES (%s)", (SCHEMA_VERSION,))

    def _connect(self) -> Any:
        if self._conn is None or self._conn.closed:
            from psycopg.rows import dict_row

            self._conn = self._psycopg.connect(
                self.url,
                connect_timeout=_CONNECT_TIMEOUT_S,
                row_factory=dict_row,
                # A server cut off by the network (no reset, no answer) is noticed within
                # _DEAD_AFTER_S, not after the kernel's two hours of TCP retries: calls hold
                # the catalog's one lock, and every store call of the node waits on it.
                keepalives=1,
                keepalives_idle=_KEEPALIVE_S,
                keepalives_interval=_KEEPALIVE_S,
                keepalives_count=2,
                tcp_user_timeout=_DEAD_AFTER_S * 1000,
                options=f"-c statement_timeout={_DEAD_AFTER_S * 1000}",
            )
        return self._conn

    def close(self) -> None:
        """Close the connection; the catalog cannot be used afterwards."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()

    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        """A server that is down or went away mid-call: UNAVAILABLE, and a new connection
        next time (a broken one is closed, not reused)."""
        try:
            yield
        except self._psycopg.OperationalError as err:
            if self._conn is not None and not self._conn.closed:
                self._conn.close()
            self._conn = None
            logger.warning("store database %s does not answer: %s", self.where, type(err).__name__)
            raise UnavailableError(
                f"the store database ({self.where}) does not answer; try again shortly"
            ) from None

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """Hold the lock and a transaction; commit on success, roll back on any error."""
        with self._lock, self._unavailable():
            conn = self._connect()
            with conn.transaction():
                yield conn

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        with self._lock, self._unavailable():
            conn = self._connect()
            with conn.transaction():
                return list(conn.execute(sql, list(params)).fetchall())

    def insert(self, record: CatalogRecord) -> None:
        """Add a new record (its id must be new)."""
        with self.transaction() as db:
            _insert(db, record)

    def get(self, cls: type[CatalogRecord], ident: str) -> CatalogRecord:
        """Return the record with this id; :class:`NotFoundError` if there is none."""
        table, key, _ = TABLES[cls]
        rows = self._read(f"SELECT * FROM {table} WHERE {key} = %s", (ident,))
        if not rows:
            raise NotFoundError(KINDS[cls], ident)
        return from_row(cls, rows[0])

    def list_case(self, cls: type[CatalogRecord], case_id: str) -> list[CatalogRecord]:
        """Return the case's records of one kind, newest first."""
        table = TABLES[cls][0]
        sql = f"SELECT * FROM {table} WHERE case_id = %s ORDER BY created_unix_ns DESC, seq DESC"
        return [from_row(cls, row) for row in self._read(sql, (case_id,))]

    def replace(
        self, cls: type[CatalogRecord], ident: str, change: Callable[[CatalogRecord], CatalogRecord]
    ) -> CatalogRecord:
        """Read a record (its row locked), pass it through ``change`` and write the result,
        in one transaction; ``change`` may raise to refuse the update (nothing is written)."""
        with self.transaction() as db:
            return _replace(db, cls, ident, change)

    def replace_and_insert(
        self,
        cls: type[CatalogRecord],
        ident: str,
        change: Callable[[CatalogRecord], CatalogRecord],
        record: CatalogRecord,
    ) -> CatalogRecord:
        """:meth:`replace` one record and :meth:`insert` another, in one transaction."""
        with self.transaction() as db:
            updated = _replace(db, cls, ident, change)
            _insert(db, record)
        return updated

    def has_complete_upload(self, case_id: str, sha256: str) -> bool:
        """Tell whether the case holds a complete upload of this content."""
        sql = "SELECT 1 FROM uploads WHERE case_id = %s AND sha256 = %s AND complete LIMIT 1"
        return bool(self._read(sql, (case_id, sha256)))

    def delete_upload(self, upload_id: str) -> None:
        """Forget an upload (a no-op if it is already gone)."""
        with self.transaction() as db:
            db.execute("DELETE FROM uploads WHERE upload_id = %s", (upload_id,))

    def add_upload_part(
        self,
        upload_id: str,
        offset: int,
        size: int,
        change: Callable[[UploadRecord], UploadRecord],
    ) -> UploadRecord:
        """Record a chunk kept in the object store and pass the upload (its row locked)
        through ``change``, in one transaction (:class:`holo.store.parts.ObjectParts`);
        ``change`` refuses (raises) unless the upload still stands at ``offset``.
        """
        with self.transaction() as db:
            updated = _replace(db, UploadRecord, upload_id, change)
            db.execute(
                'INSERT INTO upload_parts (upload_id, "offset", size_bytes, written_unix_ns) '
                "VALUES (%s, %s, %s, (extract(epoch FROM clock_timestamp()) * 1e9)::bigint)",
                (upload_id, offset, size),
            )
        return updated

    def upload_parts(self, upload_id: str) -> list[tuple[int, int]]:
        """The committed chunks of an upload, ``(offset, size)`` in order."""
        rows = self._read(
            'SELECT "offset", size_bytes FROM upload_parts WHERE upload_id = %s ORDER BY "offset"',
            (upload_id,),
        )
        return [(row["offset"], row["size_bytes"]) for row in rows]

    def last_upload_part_ns(self, upload_id: str) -> int | None:
        """When the upload's last chunk was committed (the database's clock), if ever."""
        rows = self._read(
            "SELECT max(written_unix_ns) AS ns FROM upload_parts WHERE upload_id = %s",
            (upload_id,),
        )
        return rows[0]["ns"]

    def delete_upload_parts(self, upload_id: str) -> None:
        """Forget an upload's list of chunks (its row stays)."""
        with self.transaction() as db:
            db.execute("DELETE FROM upload_parts WHERE upload_id = %s", (upload_id,))

    def find_incomplete_upload(
        self, *, case_id: str, subject: str, name: str, size_bytes: int, sha256: str
    ) -> UploadRecord | None:
        """The newest unfinished upload of this file by this caller, if there is one."""
        sql = (
            "SELECT * FROM uploads WHERE NOT complete AND case_id = %s AND subject = %s "
            "AND name = %s AND size_bytes = %s AND sha256 = %s "
            "ORDER BY created_unix_ns DESC, seq DESC LIMIT 1"
        )
        rows = self._read(sql, (case_id, subject, name, size_bytes, sha256))
        return from_row(UploadRecord, rows[0]) if rows else None

    def incomplete_uploads(self) -> list[UploadRecord]:
        """Return every upload still waiting for chunks."""
        rows = self._read("SELECT * FROM uploads WHERE NOT complete")
        return [from_row(UploadRecord, row) for row in rows]

    def append_audit(self, rows: list[tuple[int, str, str, str]]) -> None:
        """Add audit records ``(t_ns, case_id, action, JSON line)`` in one transaction
        (:class:`holo.audit.AuditTable`): all of them, or none."""
        with self.transaction() as db, db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO audit (t_ns, case_id, action, line) VALUES (%s, %s, %s, %s)", rows
            )

    def ping(self) -> None:
        """Ask the server for nothing; :class:`UnavailableError` if it does not answer."""
        self._read("SELECT 1")

    def clock_ns(self) -> int:
        """Now, by the database server's clock: the one clock every node's leases are
        measured on, whatever the nodes' own clocks say."""
        rows = self._read("SELECT (extract(epoch FROM clock_timestamp()) * 1e9)::bigint AS ns")
        return int(rows[0]["ns"])

    def claim_job(
        self, now_ns: int, take_over: bool, change: Callable[[JobRecord], JobRecord]
    ) -> JobRecord | None:
        """Pass the oldest job a node may start through ``change`` and write the result, in
        one transaction; None if there is none.

        The job is the oldest queued one, or with ``take_over`` the oldest running one
        whose lease ran out before ``now_ns``. ``FOR UPDATE SKIP LOCKED``: nodes claiming
        at the same moment each lock a different job instead of queueing on one row.
        """
        with self.transaction() as db:
            row = db.execute(_CLAIM_SQL, (take_over, now_ns)).fetchone()
            if row is None:
                return None
            updated = change(from_row(JobRecord, row))
            return _replace(db, JobRecord, updated.job_id, lambda _old: updated)

    def totals(self) -> dict[str, int]:
        """Studies, models, queued jobs and blob bytes, in one read."""
        (row,) = self._read(TOTALS_SQL.format(complete=""))
        return {name: int(row[name]) for name in ("studies", "models", "queued", "blob_bytes")}

    def jobs_in_states(self, states: Iterable[str]) -> list[str]:
        """Return the ids of the jobs in any of ``states``, oldest first."""
        sql = "SELECT job_id FROM jobs WHERE state = ANY(%s) ORDER BY created_unix_ns, seq"
        return [row["job_id"] for row in self._read(sql, (list(states),))]


def _insert(db: Any, record: CatalogRecord) -> None:
    table = TABLES[type(record)][0]
    names = columns(type(record))
    sql = (
        f"INSERT INTO {table} ({', '.join(quoted(names))}) "
        f"VALUES ({', '.join(['%s'] * len(names))})"
    )
    db.execute(sql, to_row(record))


def _replace(
    db: Any, cls: type[CatalogRecord], ident: str, change: Callable[[CatalogRecord], CatalogRecord]
) -> CatalogRecord:
    table, key, _ = TABLES[cls]
    row = db.execute(f"SELECT * FROM {table} WHERE {key} = %s FOR UPDATE", (ident,)).fetchone()
    if row is None:
        raise NotFoundError(KINDS[cls], ident)
    updated = change(from_row(cls, row))
    assignments = ", ".join(f"{name} = %s" for name in quoted(columns(cls)))
    db.execute(f"UPDATE {table} SET {assignments} WHERE {key} = %s", [*to_row(updated), ident])
    return updated


def _where(url: str) -> str:
    """``host:port/database`` of a URL, for messages: never the user's password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path or '/'}"
