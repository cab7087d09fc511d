"""The store several nodes share (issue 18): PostgreSQL for the catalog, an S3 object store
for the blobs and for unfinished uploads, both real (``tests/postgres_server.py``,
``tests/s3_server.py``) and each test on a database of its own. Two ``Store`` objects with
their own local folders stand for two nodes.

Uploads: chunks of one upload arrive at either node and the file comes out whole; two
nodes given the same chunk commit it once; bytes put but never committed (a node killed in
between) are not read; nothing is left in the bucket once an upload ends.
Jobs: a claim is a lease; two nodes never run one job; a job whose lease ran out is taken
over; the node that lost it can neither advance nor publish it, so one model per job.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_server import PostgresServer
from s3_server import S3Server

from holo.errors import ChecksumError, InvalidRequestError, LeaseLostError, OffsetError
from holo.store import Store
from holo.store.publish import publish_model

BUCKET = "s3://holo-shared/site"


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with S3Server() as endpoint:
        yield endpoint


@pytest.fixture
def nodes(tmp_path: Path, postgres: PostgresServer, s3: str) -> Iterator[tuple[Store, Store]]:
    url = postgres.database()
    a = Store(tmp_path / "a", catalog=url, blobs=BUCKET, s3_endpoint=s3)
    b = Store(tmp_path / "b", catalog=url, blobs=BUCKET, s3_endpoint=s3)
    yield a, b
    a.close()
    b.close()


def _objects(store: Store, folder: str) -> list[str]:
    s3 = store._blobs  # the object store's own listing: what is really left in the bucket
    return [
        o.object_name
        for o in s3._client.list_objects(s3.bucket, prefix=f"{s3.prefix}/{folder}", recursive=True)
    ]


def _start(store: Store, data: bytes, case: str = "case-1", name: str = "knee.zip") -> str:
    sha = hashlib.sha256(data).hexdigest()
    upload = store.start_upload(
        case_id=case, name=name, size_bytes=len(data), sha256=sha, subject="radiologist"
    )
    return upload.upload_id


def test_chunks_of_one_upload_may_arrive_at_either_node(nodes: tuple[Store, Store]) -> None:
    a, b = nodes
    data = os.urandom(5 * 300_000 + 17)
    upload_id = _start(a, data)
    offset, chunk, turn = 0, 300_000, 0
    while offset < len(data):
        node = (a, b)[turn % 2]  # a client failing over at every chunk
        record = node.append_chunk(upload_id, offset, data[offset : offset + chunk])
        offset = record.offset
        turn += 1
    assert record.complete and record.offset == len(data)
    sha = hashlib.sha256(data).hexdigest()
    assert a.blob_path(sha).read_bytes() == data  # read through from the bucket
    assert b.get_upload(upload_id).complete
    assert _objects(a, f"uploads/{upload_id}/") == []  # the chunks went with the upload
    study = b.create_study(case_id="case-1", upload_ids=[upload_id], summary={})
    assert [s.study_id for s in a.list_studies("case-1")] == [study.study_id]


def test_a_client_resumes_on_another_node_at_the_acknowledged_offset(
    nodes: tuple[Store, Store],
) -> None:
    a, b = nodes
    data = os.urandom(1_000_000)
    upload_id = _start(a, data)
    a.append_chunk(upload_id, 0, data[:400_000])
    # Node A dies after putting the next chunk's object, before committing it.
    a._uploads._parts._blobs.put_object(f"uploads/{upload_id}/0000000400000-1000", b"x" * 1000)
    # The client announces the file again on B and learns where to resume.
    resumed = b.start_upload(
        case_id="case-1",
        name="knee.zip",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        subject="radiologist",
    )
    assert (resumed.upload_id, resumed.offset) == (upload_id, 400_000)
    with pytest.raises(OffsetError) as behind:
        b.append_chunk(upload_id, 0, data[:400_000])  # an old chunk again: refused
    assert behind.value.expected == 400_000
    done = b.append_chunk(upload_id, 400_000, data[400_000:])
    assert done.complete
    assert b.blob_path(resumed.sha256).read_bytes() == data  # the stray object was not read
    assert _objects(a, f"uploads/{upload_id}/") == []


def test_two_nodes_given_the_same_chunk_commit_it_once(nodes: tuple[Store, Store]) -> None:
    a, b = nodes
    data = os.urandom(600_000)
    upload_id = _start(a, data)
    outcomes: list[object] = []
    barrier = threading.Barrier(2)

    def send(node: Store) -> None:
        barrier.wait()
        try:
            outcomes.append(node.append_chunk(upload_id, 0, data[:300_000]).offset)
        except OffsetError as err:
            outcomes.append(err.expected)

    threads = [threading.Thread(target=send, args=(n,)) for n in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == [300_000, 300_000]  # one committed; the other told to go on
    assert a.append_chunk(upload_id, 300_000, data[300_000:]).complete
    assert b.blob_path(hashlib.sha256(data).hexdigest()).read_bytes() == data


def test_a_wrong_file_and_an_expired_upload_leave_nothing_in_the_bucket(
    nodes: tuple[Store, Store],
) -> None:
    a, b = nodes
    data = os.urandom(500_000)
    wrong = _start(a, data, name="w")
    a.append_chunk(wrong, 0, data[:250_000])
    corrupted = bytes([data[250_000] ^ 1]) + data[250_001:]
    with pytest.raises(ChecksumError):
        b.append_chunk(wrong, 250_000, corrupted)
    assert _objects(a, f"uploads/{wrong}/") == []
    idle = _start(a, os.urandom(400_000), name="idle")
    a.append_chunk(idle, 0, b"y" * 100_000)
    assert _objects(a, f"uploads/{idle}/")
    assert b.expire_uploads(3600) == 0  # written to just now
    time.sleep(0.05)
    assert b.expire_uploads(0.01) == 1
    assert _objects(a, f"uploads/{idle}/") == []


def test_a_stale_node_cannot_commit_a_chunk_another_node_committed(
    nodes: tuple[Store, Store],
) -> None:
    """The commit itself is conditional on the offset, not only the check before it."""
    a, b = nodes
    data = os.urandom(700_000)
    upload_id = _start(a, data)
    stale = a.get_upload(upload_id)  # A read the upload at offset 0...
    b.append_chunk(upload_id, 0, data[:350_000])  # ...then B committed the chunk
    with pytest.raises(OffsetError) as refused:
        a._uploads._parts.add(stale, 0, data[:200_000])  # A's late commit of another size
    assert refused.value.expected == 350_000
    assert a.append_chunk(upload_id, 350_000, data[350_000:]).complete
    assert b.blob_path(hashlib.sha256(data).hexdigest()).read_bytes() == data


def test_the_expiry_sweeps_chunks_a_killed_node_left_and_only_those(
    nodes: tuple[Store, Store],
) -> None:
    a, b = nodes
    data = os.urandom(500_000)
    done = _start(a, data, name="done")
    a.append_chunk(done, 0, data[:250_000])
    kept = _object_keys_of(a, done)
    a.append_chunk(done, 250_000, data[250_000:])
    # Node A killed after the upload's completion was committed, before its clean-up:
    s3 = a._blobs
    for key in kept:
        s3.put_object(key.removeprefix(f"{s3.prefix}/"), b"left behind")
    waiting = _start(b, os.urandom(400_000), name="waiting")
    b.append_chunk(waiting, 0, b"w" * 100_000)
    assert _objects(a, f"uploads/{done}/") and _objects(a, f"uploads/{waiting}/")
    assert b.expire_uploads(3600) == 0
    assert _objects(a, f"uploads/{done}/") == []  # swept
    assert _objects(a, f"uploads/{waiting}/")  # still waiting for bytes: kept


def _object_keys_of(store: Store, upload_id: str) -> list[str]:
    return _objects(store, f"uploads/{upload_id}/")


def _queued_job(store: Store, case: str = "case-1") -> str:
    data = os.urandom(1000)
    upload_id = _start(store, data, case=case)
    store.append_chunk(upload_id, 0, data)
    study = store.create_study(case_id=case, upload_ids=[upload_id], summary={})
    return store.create_job(
        study_id=study.study_id, case_id=case, preset="bone", subject="radiologist"
    ).job_id


def test_a_job_is_claimed_by_one_node_and_taken_over_when_its_lease_runs_out(
    nodes: tuple[Store, Store],
) -> None:
    a, b = nodes
    job_id = _queued_job(a)
    mine = a.claim_job(node="a", lease_s=0.5, take_over=True)
    assert mine is not None and (mine.job_id, mine.node, mine.attempts) == (job_id, "a", 1)
    assert b.claim_job(node="b", lease_s=0.5, take_over=True) is None  # held by A
    a.update_job(job_id, stage="segment", lease=mine.lease)  # A may advance its own job
    time.sleep(0.7)  # A stalls: its lease runs out
    theirs = b.claim_job(node="b", lease_s=30, take_over=True)
    assert theirs is not None and theirs.job_id == job_id
    assert (theirs.node, theirs.attempts, theirs.state) == ("b", 2, "running")
    assert "taken over from a node that stopped" in theirs.message
    with pytest.raises(LeaseLostError):
        a.update_job(job_id, stage="mesh", lease=mine.lease)
    with pytest.raises(LeaseLostError):
        a.renew_job(job_id, mine.lease, 30)
    glb = _tiny_glb()
    study_id = theirs.study_id
    with pytest.raises(LeaseLostError):  # A finishing late publishes nothing
        publish_model(a, glb, case_id="case-1", study_id=study_id, job_id=job_id,
                      preset="bone", lease=mine.lease)  # fmt: skip
    model = publish_model(b, glb, case_id="case-1", study_id=study_id, job_id=job_id,
                          preset="bone", lease=theirs.lease)  # fmt: skip
    assert [m.model_id for m in a.list_models("case-1")] == [model.model_id]
    assert a.get_job(job_id).state == "succeeded" and a.get_job(job_id).model_id == model.model_id


def test_nodes_claiming_at_once_each_get_a_different_job(nodes: tuple[Store, Store]) -> None:
    a, b = nodes
    made = {_queued_job(a) for _ in range(12)}
    claimed: list[str] = []
    lock = threading.Lock()

    def claim(node: Store, name: str) -> None:
        while (job := node.claim_job(node=name, lease_s=30, take_over=True)) is not None:
            with lock:
                claimed.append(job.job_id)

    threads = [
        threading.Thread(target=claim, args=(n, f"n{i}")) for i, n in enumerate((a, b, a, b))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed) == sorted(made)  # every job once, none twice


def test_a_job_that_stops_its_node_every_time_is_failed_not_retried_for_ever(
    nodes: tuple[Store, Store],
) -> None:
    a, b = nodes
    job_id = _queued_job(a)
    for attempt in (1, 2, 3):
        job = (a, b)[attempt % 2].claim_job(node=f"n{attempt}", lease_s=0.05, take_over=True)
        assert job is not None and job.attempts == attempt
        time.sleep(0.1)  # and its node dies
    assert a.claim_job(node="n4", lease_s=30, take_over=True) is None
    failed = b.get_job(job_id)
    assert failed.state == "failed" and "stopped with its node 3 times" in failed.message


def test_a_node_stopping_hands_its_job_back(nodes: tuple[Store, Store]) -> None:
    a, b = nodes
    job_id = _queued_job(a)
    mine = a.claim_job(node="a", lease_s=30, take_over=True)
    assert mine is not None
    queued = a.release_job(job_id, mine.lease)
    assert (queued.state, queued.node, queued.attempts) == ("queued", "", 0)
    theirs = b.claim_job(node="b", lease_s=30, take_over=True)
    assert theirs is not None and theirs.job_id == job_id and theirs.attempts == 1
    with pytest.raises(LeaseLostError):
        a.release_job(job_id, mine.lease)


def test_one_node_never_takes_its_own_running_job_over(tmp_path: Path) -> None:
    with Store(tmp_path / "one") as store:
        job_id = _queued_job(store)
        job = store.claim_job(node="one", lease_s=0.01, take_over=False)
        assert job is not None and job.job_id == job_id
        time.sleep(0.05)
        assert store.claim_job(node="one", lease_s=30, take_over=False) is None


def test_a_shared_catalog_needs_shared_blobs(tmp_path: Path, postgres: PostgresServer) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        Store(tmp_path / "a", catalog=postgres.database())
    assert "--blobs s3://" in str(refused.value)
    with pytest.raises(InvalidRequestError) as unknown:
        Store(tmp_path / "b", catalog="mysql://root:secret@db/holo")
    assert "secret" not in str(unknown.value) and "mysql://" in str(unknown.value)


def _tiny_glb() -> bytes:
    import trimesh

    return trimesh.creation.box(extents=(0.01, 0.01, 0.01)).export(file_type="glb")
