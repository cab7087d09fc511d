"""The job runner over the store's queue: what it does when the audit trail refuses, when the
node stops with jobs queued, and, on a shared store (real PostgreSQL and SeaweedFS), when
its lease is lost or its job is cancelled from another node: it stops its worker and
publishes nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_server import PostgresServer
from s3_server import S3Server

from holo.audit import AuditLog
from holo.errors import DiskFullError
from holo.jobs import STOPPED_MESSAGE, JobRunner
from holo.store import JobRecord, Store

CASE = "case-1"


def _study(store: Store, folder: Path) -> str:
    """The files of ``folder`` uploaded to ``store`` as one study; its id."""
    ids = []
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        upload = store.start_upload(
            case_id=CASE,
            name=path.name,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            subject="tester",
        )
        if not upload.complete:
            store.append_chunk(upload.upload_id, 0, data)
        ids.append(upload.upload_id)
    return store.create_study(case_id=CASE, upload_ids=ids, summary={}).study_id


def test_a_conversion_the_audit_trail_refuses_is_never_queued(
    tmp_path: Path, sample_ct: Path
) -> None:
    async def scenario(store: Store, study_id: str) -> None:
        audit = AuditLog(Path("/dev/full"))  # a device that is always full
        runner = JobRunner(store, deid_salt="test", audit=audit)
        try:
            with pytest.raises(DiskFullError):
                await runner.start(study_id=study_id, case_id=CASE, preset="bone", series_uid="")
        finally:
            await runner.close()
            audit.close()

    with Store(tmp_path / "store") as store:
        study_id = _study(store, sample_ct)
        asyncio.run(scenario(store, study_id))
        assert store.list_jobs(CASE) == []  # nothing any node could have started


def test_stopping_one_node_fails_its_queued_jobs_and_tells_their_watchers(
    tmp_path: Path, sample_ct: Path
) -> None:
    async def scenario(store: Store, job_id: str) -> list[JobRecord]:
        runner = JobRunner(store, deid_salt="test")  # not claiming: the job stays queued
        watch = runner.watch(job_id)
        seen = [await anext(watch)]
        await runner.close()
        seen.append(await asyncio.wait_for(anext(watch), 10))
        return seen

    with Store(tmp_path / "store") as store:
        job = store.create_job(study_id=_study(store, sample_ct), case_id=CASE, preset="bone")
        seen = asyncio.run(scenario(store, job.job_id))
        assert [j.state for j in seen] == ["queued", "failed"]
        assert seen[1].message == STOPPED_MESSAGE == store.get_job(job.job_id).message


@pytest.fixture(scope="module")
def engines(postgres: PostgresServer) -> Iterator[tuple[PostgresServer, str]]:
    with S3Server() as endpoint:
        yield postgres, endpoint


@pytest.mark.parametrize("taken", ["taken over", "cancelled from another node"])
def test_a_node_that_loses_its_job_stops_its_worker_and_publishes_nothing(
    engines: tuple[PostgresServer, str], tmp_path: Path, sample_ct: Path, taken: str
) -> None:
    postgres, endpoint = engines
    url = postgres.database()
    a = Store(tmp_path / "a", catalog=url, blobs="s3://holo-runner/x", s3_endpoint=endpoint)
    b = Store(tmp_path / "b", catalog=url, blobs="s3://holo-runner/x", s3_endpoint=endpoint)

    async def scenario(study_id: str) -> tuple[JobRecord, int | None]:
        runner = JobRunner(a, deid_salt="test", node="a", lease_s=0.6)  # renews every 0.2 s
        try:
            job = await runner.start(study_id=study_id, case_id=CASE, preset="skin", series_uid="")
            async for state in runner.watch(job.job_id):
                if state.state == "running" and state.stage not in ("", "read"):
                    break  # its worker converts
            process = runner._processes[job.job_id]
            if taken == "taken over":  # as node B's claim would, once A seemed dead
                stolen = dataclasses.replace(a.get_job(job.job_id), node="b", lease="b-lease")
                b._catalog.replace(JobRecord, job.job_id, lambda _j: stolen)
            else:
                b.update_job(job.job_id, state="cancelled", message="cancelled by request")
            for _ in range(100):  # its next renewal sees it and stops the worker
                if not process.is_alive():
                    break
                await asyncio.sleep(0.1)
            return b.get_job(job.job_id), process.exitcode
        finally:
            await runner.close()

    try:
        final, exitcode = asyncio.run(asyncio.wait_for(scenario(_study(a, sample_ct)), 120))
        assert exitcode == -signal.SIGTERM, f"the worker was not stopped: {exitcode}"
        assert b.list_models(CASE) == []  # nothing published
        if taken == "taken over":
            assert (final.state, final.node, final.lease) == ("running", "b", "b-lease")
        else:
            assert final.state == "cancelled"
    finally:
        a.close()
        b.close()
