"""The store's catalog on both engines: SQLite (one node, the default) and PostgreSQL (the
catalog nodes share), started for real (``tests/postgres_server.py``). The same checks
run on both, so :mod:`holo.store.store` can take either; then what only a shared catalog
needs: two nodes see each other's rows, read-modify-writes from two nodes do not lose
updates, and a database that stops answering is UNAVAILABLE and then recovers.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from postgres_server import PostgresServer

from holo.errors import NotFoundError, UnavailableError
from holo.store.catalog import Catalog
from holo.store.postgres import PostgresCatalog
from holo.store.records import JobRecord, ModelRecord, StudyRecord, UploadRecord


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        made: Any = Catalog(tmp_path / "holo.sqlite3")
    else:
        made = PostgresCatalog(request.getfixturevalue("postgres").url)
    yield made
    made.close()


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def study(case: str, at: int = 1) -> StudyRecord:
    files = [("a.dcm", "ab" * 32), ("b.dcm", "cd" * 32)]
    return StudyRecord(new_id("st"), case, files, 10, {"series": [{"uid": "1.2"}]}, at)


def job(study_record: StudyRecord, at: int = 1, state: str = "queued") -> JobRecord:
    return JobRecord(
        new_id("job"), study_record.study_id, study_record.case_id, "bone", "", state, "", 0.0,
        "", "", at, 0,
    )  # fmt: skip


def upload(case: str, *, complete: bool = False, at: int = 1, sha: str = "ef" * 32) -> UploadRecord:
    return UploadRecord(new_id("up"), case, "knee.zip", 100, sha, 0, complete, "radiologist", at)


def test_records_come_back_as_they_went_in(catalog: Any) -> None:
    case = new_id("case")
    s = study(case)
    catalog.insert(s)
    assert catalog.get(StudyRecord, s.study_id) == s  # JSON columns and tuples round-trip
    j = job(s)
    catalog.insert(j)
    assert catalog.get(JobRecord, j.job_id) == j
    u = upload(case, complete=True)
    catalog.insert(u)
    assert catalog.get(UploadRecord, u.upload_id) == u
    m = ModelRecord(
        new_id("mdl"), case, s.study_id, j.job_id, "12" * 32, 5, "bone", {"lods": [1]}, 3
    )
    catalog.insert(m)
    assert catalog.get(ModelRecord, m.model_id) == m
    with pytest.raises(NotFoundError):
        catalog.get(ModelRecord, "mdl_none")


def test_a_case_lists_newest_first_and_only_its_own(catalog: Any) -> None:
    case, other = new_id("case"), new_id("case")
    made = [study(case, at=t) for t in (5, 7, 7, 6)]
    for record in [*made, study(other, at=9)]:
        catalog.insert(record)
    listed = [r.study_id for r in catalog.list_case(StudyRecord, case)]
    # Newest first; of two at the same moment, the later insert first.
    assert listed == [made[2].study_id, made[1].study_id, made[3].study_id, made[0].study_id]


def test_replace_writes_the_change_or_nothing(catalog: Any) -> None:
    s = study(new_id("case"))
    catalog.insert(s)
    j = job(s)
    catalog.insert(j)
    done = catalog.replace(JobRecord, j.job_id, lambda r: dataclasses.replace(r, state="running"))
    assert done.state == "running" and catalog.get(JobRecord, j.job_id).state == "running"

    def refuse(_record: JobRecord) -> JobRecord:
        raise ValueError("no")

    with pytest.raises(ValueError):
        catalog.replace(JobRecord, j.job_id, refuse)
    assert catalog.get(JobRecord, j.job_id).state == "running"
    with pytest.raises(NotFoundError):
        catalog.replace(JobRecord, "job_none", lambda r: r)


def test_a_model_and_its_job_are_written_together_or_not_at_all(catalog: Any) -> None:
    s = study(new_id("case"))
    catalog.insert(s)
    j = job(s, state="running")
    catalog.insert(j)
    m = ModelRecord(new_id("mdl"), s.case_id, s.study_id, j.job_id, "12" * 32, 5, "bone", {}, 3)
    succeed = lambda r: dataclasses.replace(r, state="succeeded", model_id=m.model_id)  # noqa: E731
    catalog.replace_and_insert(JobRecord, j.job_id, succeed, m)
    assert catalog.get(JobRecord, j.job_id).model_id == m.model_id
    assert catalog.get(ModelRecord, m.model_id) == m
    # The same model id again: the insert fails, so the job's change is rolled back too.
    j2 = job(s, state="running")
    catalog.insert(j2)
    with pytest.raises(Exception):  # noqa: B017 (each engine's own integrity error)
        catalog.replace_and_insert(JobRecord, j2.job_id, succeed, m)
    assert catalog.get(JobRecord, j2.job_id).state == "running"


def test_uploads_are_found_by_what_they_hold(catalog: Any) -> None:
    case = new_id("case")
    older, newer = upload(case, at=1), upload(case, at=2)
    done = upload(case, complete=True, sha="99" * 32)
    for record in (older, newer, done):
        catalog.insert(record)
    found = catalog.find_incomplete_upload(
        case_id=case, subject="radiologist", name="knee.zip", size_bytes=100, sha256="ef" * 32
    )
    assert found == newer
    assert catalog.has_complete_upload(case, "99" * 32)
    assert not catalog.has_complete_upload(case, "ef" * 32)
    pending = {u.upload_id for u in catalog.incomplete_uploads()}
    assert {older.upload_id, newer.upload_id} <= pending and done.upload_id not in pending
    catalog.delete_upload(older.upload_id)
    catalog.delete_upload(older.upload_id)  # gone already: no error
    with pytest.raises(NotFoundError):
        catalog.get(UploadRecord, older.upload_id)


def test_jobs_are_found_by_state_oldest_first(catalog: Any) -> None:
    s = study(new_id("case"))
    catalog.insert(s)
    jobs = [
        job(s, at=3, state="running"),
        job(s, at=1, state="queued"),
        job(s, at=2, state="failed"),
    ]
    for record in jobs:
        catalog.insert(record)
    wanted = {jobs[0].job_id, jobs[1].job_id}
    found = [i for i in catalog.jobs_in_states(("queued", "running")) if i in wanted]
    assert found == [jobs[1].job_id, jobs[0].job_id]


def test_two_nodes_share_one_postgresql_catalog(postgres: PostgresServer) -> None:
    node_a, node_b = PostgresCatalog(postgres.url), PostgresCatalog(postgres.url)
    try:
        s = study(new_id("case"))
        node_a.insert(s)
        assert node_b.get(StudyRecord, s.study_id) == s
        j = job(s)
        node_b.insert(j)
        assert [r.job_id for r in node_a.list_case(JobRecord, s.case_id)] == [j.job_id]
    finally:
        node_a.close()
        node_b.close()


def test_read_modify_writes_from_two_nodes_lose_nothing(postgres: PostgresServer) -> None:
    nodes = [PostgresCatalog(postgres.url) for _ in range(2)]
    try:
        s = study(new_id("case"))
        nodes[0].insert(s)
        j = job(s)
        nodes[0].insert(j)
        step = lambda r: dataclasses.replace(r, fraction=r.fraction + 1)  # noqa: E731

        def work(node: PostgresCatalog) -> None:
            for _ in range(50):
                node.replace(JobRecord, j.job_id, step)

        threads = [threading.Thread(target=work, args=(n,)) for n in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert nodes[1].get(JobRecord, j.job_id).fraction == 100
    finally:
        for node in nodes:
            node.close()


def test_a_database_that_stops_answering_is_unavailable_then_recovers() -> None:
    server = PostgresServer()
    url = server.__enter__()
    try:
        node = PostgresCatalog(url)
        s = study(new_id("case"))
        node.insert(s)
        server.stop()
        with pytest.raises(UnavailableError, match=r"store database \(127\.0\.0\.1:\d+/holo\)"):
            node.get(StudyRecord, s.study_id)
        with pytest.raises(UnavailableError):
            node.insert(study(s.case_id))
        server.start()
        assert node.get(StudyRecord, s.study_id) == s  # connected again
        assert len(node.list_case(StudyRecord, s.case_id)) == 1  # nothing half-written
        node.close()
    finally:
        server.__exit__(None, None, None)


def test_a_store_made_before_jobs_had_leases_is_brought_up_to_date(tmp_path: Path) -> None:
    """Schema version 1 (no subject, node or lease columns) opens as version 2, its jobs
    kept, the new columns at their defaults."""
    import sqlite3

    path = tmp_path / "holo.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE studies (study_id TEXT PRIMARY KEY, case_id TEXT NOT NULL,
                files TEXT NOT NULL, size_bytes INTEGER NOT NULL, summary TEXT NOT NULL,
                created_unix_ns INTEGER NOT NULL);
            CREATE TABLE jobs (job_id TEXT PRIMARY KEY,
                study_id TEXT NOT NULL REFERENCES studies(study_id), case_id TEXT NOT NULL,
                preset TEXT NOT NULL, series_uid TEXT NOT NULL, state TEXT NOT NULL,
                stage TEXT NOT NULL, fraction REAL NOT NULL, message TEXT NOT NULL,
                model_id TEXT NOT NULL, created_unix_ns INTEGER NOT NULL,
                finished_unix_ns INTEGER NOT NULL);
            CREATE TABLE uploads (upload_id TEXT PRIMARY KEY, case_id TEXT NOT NULL,
                name TEXT NOT NULL, size_bytes INTEGER NOT NULL, sha256 TEXT NOT NULL,
                "offset" INTEGER NOT NULL, complete INTEGER NOT NULL, subject TEXT NOT NULL,
                created_unix_ns INTEGER NOT NULL);
            CREATE TABLE models (model_id TEXT PRIMARY KEY, case_id TEXT NOT NULL,
                study_id TEXT NOT NULL REFERENCES studies(study_id), job_id TEXT NOT NULL,
                sha256 TEXT NOT NULL, size_bytes INTEGER NOT NULL, preset TEXT NOT NULL,
                manifest TEXT NOT NULL, created_unix_ns INTEGER NOT NULL);
            INSERT INTO studies VALUES ('st_1', 'c', '[]', 0, '{}', 1);
            INSERT INTO jobs VALUES ('job_1', 'st_1', 'c', 'bone', '', 'succeeded', 'done',
                1.0, 'model mdl_1', 'mdl_1', 1, 2);
            PRAGMA user_version = 1;
            """
        )
    catalog = Catalog(path)
    try:
        job = catalog.get(JobRecord, "job_1")
        assert (job.state, job.model_id, job.subject, job.lease, job.attempts) == (
            "succeeded", "mdl_1", "", "", 0,
        )  # fmt: skip
        assert catalog._db.execute("PRAGMA user_version").fetchone()[0] == 2
    finally:
        catalog.close()
    Catalog(path).close()  # and opens again as it is
