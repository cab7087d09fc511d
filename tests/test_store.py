"""The embedded asset store: real files and a real SQLite database under tmp_path."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from holo.errors import (
    ChecksumError,
    HoloError,
    InvalidRequestError,
    LimitError,
    NotFoundError,
    OffsetError,
)
from holo.store import Store, UploadRecord

REPO = Path(__file__).resolve().parents[1]
MiB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path) -> Iterator[Store]:
    with Store(root) as opened:
        yield opened


def start(store: Store, data: bytes, *, case_id: str = "case-1", name: str = "IM0001") -> str:
    record = store.start_upload(
        case_id=case_id, name=name, size_bytes=len(data), sha256=sha(data), subject="alice"
    )
    return record.upload_id


def upload(
    store: Store, data: bytes, *, case_id: str = "case-1", name: str = "IM0001", chunk: int = MiB
) -> UploadRecord:
    upload_id = start(store, data, case_id=case_id, name=name)
    record = store.get_upload(upload_id)
    while not record.complete:
        record = store.append_chunk(
            upload_id, record.offset, data[record.offset : record.offset + chunk]
        )
    return record


def blob_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "blobs").rglob("*") if p.is_file())


def assert_blobs_sound(root: Path) -> None:
    """Every blob file is named by the SHA-256 of its bytes."""
    for path in blob_files(root):
        assert path.parent.name + path.name == sha(path.read_bytes()), path


# -- uploads -------------------------------------------------------------------------------


def test_chunked_upload_stores_the_blob(store: Store, root: Path) -> None:
    data = random.Random(1).randbytes(2 * MiB + 12345)
    upload_id = start(store, data)
    first = store.append_chunk(upload_id, 0, data[:MiB])
    assert (first.offset, first.complete) == (MiB, False)
    store.append_chunk(upload_id, MiB, data[MiB : 2 * MiB])
    done = store.append_chunk(upload_id, 2 * MiB, data[2 * MiB :])

    assert done.complete and done.offset == len(data)
    assert store.get_upload(upload_id) == done
    path = store.blob_path(sha(data))
    assert path == root / "blobs" / sha(data)[:2] / sha(data)[2:]
    assert path.read_bytes() == data
    assert list((root / "uploads").iterdir()) == []


def test_identical_content_is_stored_once(store: Store, root: Path) -> None:
    data = b"DICM" * 1000
    upload(store, data)
    again = store.start_upload(
        case_id="case-1", name="copy", size_bytes=len(data), sha256=sha(data), subject="bob"
    )
    assert again.complete and again.offset == len(data)  # the case holds it: nothing to send
    assert len(blob_files(root)) == 1
    assert store.put_blob(data) == sha(data)
    assert len(blob_files(root)) == 1


def test_another_cases_content_must_be_sent_in_full(store: Store, root: Path) -> None:
    data = b"case-1 patient file" * 500
    upload(store, data, case_id="case-1")
    # Knowing the hash is not holding the file: case 2 must send the bytes.
    claimed = store.start_upload(
        case_id="case-2", name="guess", size_bytes=len(data), sha256=sha(data), subject="eve"
    )
    assert not claimed.complete and claimed.offset == 0
    with pytest.raises(InvalidRequestError, match="finish it"):
        store.create_study(case_id="case-2", upload_ids=[claimed.upload_id], summary={})
    # Wrong bytes under that hash are refused; the real bytes complete the upload, and the
    # content is still stored once (the verified part file is dropped).
    with pytest.raises(ChecksumError):
        store.append_chunk(claimed.upload_id, 0, b"x" * len(data))
    sent = upload(store, data, case_id="case-2", name="real")
    assert sent.complete
    assert store.create_study(case_id="case-2", upload_ids=[sent.upload_id], summary={})
    assert len(blob_files(root)) == 1
    assert list((root / "uploads").iterdir()) == []
    # Now case 2 holds it too, and may skip sending it again.
    assert store.start_upload(
        case_id="case-2", name="again", size_bytes=len(data), sha256=sha(data), subject="eve"
    ).complete


def test_reopening_does_not_complete_another_cases_claimed_upload(root: Path) -> None:
    data = b"case-1 content" * 300
    with Store(root) as store:
        upload(store, data, case_id="case-1")
        claimed = start(store, data, case_id="case-2")
        store.append_chunk(claimed, 0, data[:100])
    with Store(root) as store:  # recovery sees the blob stored, but the part file is there
        record = store.get_upload(claimed)
        assert not record.complete and record.offset == 100


def test_upload_resumes_after_reopening(root: Path) -> None:
    data = random.Random(2).randbytes(300_000)
    with Store(root) as store:
        upload_id = start(store, data)
        store.append_chunk(upload_id, 0, data[:100_000])
    with Store(root) as store:
        assert store.get_upload(upload_id).offset == 100_000
        with pytest.raises(OffsetError) as caught:
            store.append_chunk(upload_id, 0, data[:100_000])
        assert caught.value.expected == 100_000
        store.append_chunk(upload_id, 100_000, data[100_000:])
        assert store.blob_path(sha(data)).read_bytes() == data


def test_wrong_offset_says_where_to_resume(store: Store) -> None:
    data = b"x" * 1000
    upload_id = start(store, data)
    store.append_chunk(upload_id, 0, data[:10])
    with pytest.raises(OffsetError, match="resume from 10") as caught:
        store.append_chunk(upload_id, 20, data[20:30])
    assert caught.value.expected == 10


@pytest.mark.parametrize(
    ("offset", "chunk", "error"),
    [
        (0, b"", InvalidRequestError),
        (0, b"x" * (Store.MAX_CHUNK_BYTES + 1), LimitError),
        (0, b"x" * (2 * MiB + 1), LimitError),
    ],
    ids=["empty", "over-chunk-limit", "over-announced-size"],
)
def test_bad_chunks_are_refused(
    root: Path, offset: int, chunk: bytes, error: type[Exception]
) -> None:
    with Store(root) as store:
        upload_id = start(store, b"y" * (Store.MAX_CHUNK_BYTES + 10))
        with pytest.raises(error):
            store.append_chunk(upload_id, offset, chunk)
        assert store.get_upload(upload_id).offset == 0


def test_chunk_past_the_announced_size_is_refused(store: Store) -> None:
    upload_id = start(store, b"z" * 100)
    with pytest.raises(LimitError, match="exceed the announced size"):
        store.append_chunk(upload_id, 0, b"z" * 101)


def test_chunk_after_completion_is_an_offset_error(store: Store) -> None:
    record = upload(store, b"done")
    with pytest.raises(OffsetError) as caught:
        store.append_chunk(record.upload_id, 4, b"more")
    assert caught.value.expected == 4


GOOD = {"case_id": "case-1", "name": "IM0001", "size_bytes": 10, "sha256": "a" * 64}


@pytest.mark.parametrize(
    "change",
    [
        {"sha256": "A" * 64},
        {"sha256": "a" * 63},
        {"sha256": "g" * 64},
        {"name": ""},
        {"name": "a/b"},
        {"name": "a\\b"},
        {"name": "a\0b"},
        {"name": "."},
        {"name": ".."},
        {"name": "x" * 256},
        {"size_bytes": 0},
        {"size_bytes": -1},
        {"case_id": ""},
        {"case_id": "a b"},
        {"case_id": "c" * 129},
    ],
)
def test_start_upload_refuses_malformed_fields(store: Store, change: dict[str, object]) -> None:
    with pytest.raises(InvalidRequestError):
        store.start_upload(**{**GOOD, **change, "subject": "alice"})  # type: ignore[arg-type]


def test_start_upload_refuses_files_over_the_limit(root: Path) -> None:
    with Store(root, max_upload_bytes=1000) as store:
        with pytest.raises(LimitError, match=r"1001 bytes .* 1000 bytes"):
            store.start_upload(**{**GOOD, "size_bytes": 1001}, subject="alice")  # type: ignore[arg-type]
        assert store.start_upload(**{**GOOD, "size_bytes": 1000}, subject="a").offset == 0  # type: ignore[arg-type]


def test_checksum_mismatch_stores_nothing(store: Store, root: Path) -> None:
    announced = b"a" * 5000
    upload_id = start(store, announced)
    store.append_chunk(upload_id, 0, b"a" * 4000)
    with pytest.raises(ChecksumError, match="start the upload again"):
        store.append_chunk(upload_id, 4000, b"b" * 1000)
    assert blob_files(root) == []
    assert list((root / "uploads").iterdir()) == []
    with pytest.raises(NotFoundError):
        store.get_upload(upload_id)
    upload(store, announced)  # the same file, sent again, goes through
    assert store.blob_path(sha(announced)).read_bytes() == announced


# -- crash recovery --------------------------------------------------------------------------


def test_part_file_longer_than_its_offset_is_cut_back(root: Path) -> None:
    data = random.Random(3).randbytes(50_000)
    with Store(root) as store:
        upload_id = start(store, data)
        store.append_chunk(upload_id, 0, data[:20_000])
    part = root / "uploads" / f"{upload_id}.part"
    with open(part, "ab") as fh:  # as if killed after the write, before the commit
        fh.write(data[20_000:30_000])
    with Store(root) as store:
        assert store.get_upload(upload_id).offset == 20_000
        assert part.stat().st_size == 20_000
        store.append_chunk(upload_id, 20_000, data[20_000:])
        assert store.blob_path(sha(data)).read_bytes() == data


def test_opening_removes_leftovers_and_adopts_stored_content(root: Path) -> None:
    data = b"content" * 100
    with Store(root) as store:
        pending = start(store, data)
        # As if the finished part had become the blob and the process died before the commit.
        store.put_blob(data)
        (root / "uploads" / f"{pending}.part").unlink()
    (root / "uploads" / "up_orphan.part").write_bytes(b"no row")
    (root / "tmp" / "blob.123.tmp").write_bytes(b"half a blob")
    (root / "tmp" / "job_1.scratch").mkdir()
    with Store(root) as store:
        assert list((root / "uploads").iterdir()) == []
        assert list((root / "tmp").iterdir()) == []
        assert store.get_upload(pending).complete
        assert store.tmp_dir == root / "tmp"


CHILD = """
import random, sys
from holo.store import Store

root, upload_id, seed, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
data = random.Random(0).randbytes(size)
rng = random.Random(seed)
store = Store(root)
print("ready", flush=True)
record = store.get_upload(upload_id)
while not record.complete:
    n = rng.randint(1, 64 << 10)
    record = store.append_chunk(upload_id, record.offset, data[record.offset : record.offset + n])
    print(record.offset, flush=True)
while True:  # keep writing blobs, so that a kill may land inside one
    store.put_blob(rng.randbytes(rng.randint(1, 256 << 10)))
"""


def test_kill_9_at_any_moment_leaves_a_sound_store(root: Path) -> None:
    size = 32 * MiB
    data = random.Random(0).randbytes(size)
    with Store(root) as store:
        upload_id = start(store, data)
    part = root / "uploads" / f"{upload_id}.part"
    rng = random.Random(20240607)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for round_ in range(8):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root), upload_id, str(round_), str(size)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        child.wait()
        told = [int(line) for line in child.stdout.read().split()]
        child.stdout.close()

        with sqlite3.connect(root / "holo.sqlite3") as db:
            offset, complete = db.execute(
                'SELECT "offset", complete FROM uploads WHERE upload_id = ?', (upload_id,)
            ).fetchone()
        db.close()
        assert offset >= max(told, default=0)  # an acknowledged offset is never lost
        if not complete and part.exists():
            assert offset <= part.stat().st_size
        elif not complete:  # killed after the finished file became the blob, before the commit
            assert (root / "blobs" / sha(data)[:2] / sha(data)[2:]).is_file()
        with Store(root) as store:
            record = store.get_upload(upload_id)
            assert record.offset == offset
            if not record.complete:
                assert part.stat().st_size == offset
            assert list((root / "tmp").iterdir()) == []
            assert_blobs_sound(root)

    with Store(root) as store:
        record = store.get_upload(upload_id)
        while not record.complete:
            record = store.append_chunk(
                upload_id, record.offset, data[record.offset : record.offset + MiB]
            )
        assert store.blob_path(sha(data)).read_bytes() == data


# -- studies, jobs, models -------------------------------------------------------------------


def make_study(store: Store, case_id: str = "case-1") -> str:
    ids = [
        upload(store, f"{case_id} file {i}".encode(), case_id=case_id, name=f"IM{i}").upload_id
        for i in range(3)
    ]
    summary = {"series": [{"uid": "1.2.3", "slices": 3}], "patient": ["anon", None]}
    return store.create_study(case_id=case_id, upload_ids=ids, summary=summary).study_id


def test_study_lists_its_files_in_upload_order(store: Store) -> None:
    contents = [b"second-named-first", b"a", b"third"]
    ids = [upload(store, c, name=f"n{i}").upload_id for i, c in enumerate(contents)]
    study = store.create_study(case_id="case-1", upload_ids=ids, summary={"t": (1, 2)})

    assert study.files == [(f"n{i}", sha(c)) for i, c in enumerate(contents)]
    assert study.size_bytes == sum(map(len, contents))
    assert study.summary == {"t": [1, 2]}  # as it reads back from the database
    assert store.get_study(study.study_id) == study
    files = store.study_files(study.study_id)
    assert [(name, path.read_bytes()) for name, path in files] == [
        (f"n{i}", c) for i, c in enumerate(contents)
    ]


def test_create_study_refusals(store: Store) -> None:
    mine = upload(store, b"mine").upload_id
    theirs = upload(store, b"theirs", case_id="case-2").upload_id
    unfinished = start(store, b"not yet")
    with pytest.raises(NotFoundError) as caught:
        store.create_study(case_id="case-1", upload_ids=[mine, theirs], summary={})
    assert (caught.value.kind, caught.value.ident) == ("upload", theirs)
    with pytest.raises(NotFoundError):
        store.create_study(case_id="case-1", upload_ids=["up_missing"], summary={})
    for ids in ([], [mine, mine], [unfinished]):
        with pytest.raises(InvalidRequestError):
            store.create_study(case_id="case-1", upload_ids=ids, summary={})
    with pytest.raises(InvalidRequestError):
        store.create_study(case_id="case-1", upload_ids=[mine], summary={"x": object()})
    assert store.list_studies("case-1") == []


def test_lists_are_per_case_and_newest_first(store: Store) -> None:
    first, second = make_study(store), make_study(store)
    other = make_study(store, "case-2")
    assert [s.study_id for s in store.list_studies("case-1")] == [second, first]
    assert [s.study_id for s in store.list_studies("case-2")] == [other]
    assert store.list_studies("case-3") == []
    jobs = [store.create_job(study_id=first, case_id="case-1", preset="bone") for _ in range(3)]
    store.create_job(study_id=other, case_id="case-2", preset="bone")
    assert [j.job_id for j in store.list_jobs("case-1")] == [j.job_id for j in reversed(jobs)]
    assert len(store.list_jobs("case-2")) == 1
    with pytest.raises(NotFoundError):
        store.create_job(study_id=other, case_id="case-1", preset="bone")
    with pytest.raises(InvalidRequestError):
        store.list_jobs("not a case")


def test_job_lifecycle_and_model(store: Store) -> None:
    study_id = make_study(store)
    job = store.create_job(study_id=study_id, case_id="case-1", preset="bone", series_uid="1.2")
    assert (job.state, job.fraction, job.finished_unix_ns, job.model_id) == ("queued", 0, 0, "")

    running = store.update_job(job.job_id, state="running", stage="read", fraction=0.25)
    assert (running.state, running.stage, running.fraction) == ("running", "read", 0.25)
    assert store.update_job(job.job_id, message="meshing").stage == "read"  # others kept
    bad_updates: list[dict[str, Any]] = [
        {"state": "paused"},
        {"fraction": 1.5},
        {"fraction": float("nan")},
    ]
    for bad in bad_updates:
        with pytest.raises(InvalidRequestError):
            store.update_job(job.job_id, **bad)

    glb = b"glTF" + bytes(1000)
    with pytest.raises(NotFoundError) as caught:
        store.add_model(
            case_id="case-1", study_id=study_id, job_id=job.job_id, sha256=sha(glb),
            preset="bone", manifest={},
        )  # fmt: skip
    assert caught.value.kind == "blob"
    model = store.add_model(
        case_id="case-1",
        study_id=study_id,
        job_id=job.job_id,
        sha256=store.put_blob(glb),
        preset="bone",
        manifest={"lods": [1, 2]},
    )
    assert model.size_bytes == len(glb) and store.get_model(model.model_id) == model
    assert store.list_models("case-1") == [model] and store.list_models("case-2") == []

    # Publishing the model marked the job succeeded, in the same transaction.
    done = store.get_job(job.job_id)
    assert (done.state, done.stage, done.fraction) == ("succeeded", "done", 1.0)
    assert done.model_id == model.model_id and model.model_id in done.message
    assert done.finished_unix_ns >= job.created_unix_ns > 0
    with pytest.raises(InvalidRequestError, match="already succeeded"):
        store.update_job(job.job_id, state="cancelled")
    with pytest.raises(InvalidRequestError, match="already succeeded"):  # one model per job
        store.add_model(
            case_id="case-1", study_id=study_id, job_id=job.job_id, sha256=sha(glb),
            preset="bone", manifest={},
        )  # fmt: skip
    assert store.list_models("case-1") == [model]


@pytest.mark.parametrize("final", ["cancelled", "failed"])
def test_a_finished_job_publishes_no_model(store: Store, final: str) -> None:
    study_id = make_study(store)
    job = store.create_job(study_id=study_id, case_id="case-1", preset="bone")
    store.update_job(job.job_id, state="running", stage="mesh")
    store.update_job(job.job_id, state=final, message="by request")
    with pytest.raises(InvalidRequestError, match=f"already {final}"):
        store.add_model(
            case_id="case-1", study_id=study_id, job_id=job.job_id,
            sha256=store.put_blob(b"glTF late model"), preset="bone", manifest={},
        )  # fmt: skip
    assert store.list_models("case-1") == []
    after = store.get_job(job.job_id)
    assert (after.state, after.model_id, after.message) == (final, "", "by request")


def test_interrupted_jobs_fail_after_a_restart(root: Path) -> None:
    with Store(root) as store:
        study_id = make_study(store)
        queued, running, finished = (
            store.create_job(study_id=study_id, case_id="case-1", preset="bone").job_id
            for _ in range(3)
        )
        store.update_job(running, state="running")
        store.update_job(finished, state="cancelled")
    with Store(root) as store:
        assert sorted(store.fail_interrupted_jobs()) == sorted([queued, running])
        for job_id in (queued, running):
            job = store.get_job(job_id)
            assert job.state == "failed" and job.finished_unix_ns > 0
            assert job.message == "interrupted by a server restart; start the conversion again"
        assert store.get_job(finished).state == "cancelled"
        assert store.fail_interrupted_jobs() == []


@pytest.mark.parametrize("ident", ["up_missing", "", "a b", "../../etc/passwd", "x" * 129, "é"])
@pytest.mark.parametrize("kind", ["upload", "study", "job", "model"])
def test_unknown_and_malformed_ids_are_not_found(store: Store, kind: str, ident: str) -> None:
    getter = {
        "upload": store.get_upload,
        "study": store.get_study,
        "job": store.get_job,
        "model": store.get_model,
    }[kind]
    with pytest.raises(NotFoundError) as caught:
        getter(ident)
    assert (caught.value.kind, caught.value.ident) == (kind, ident)
    if kind == "upload":
        with pytest.raises(NotFoundError):
            store.append_chunk(ident, 0, b"x")
    if kind == "job":
        with pytest.raises(NotFoundError):
            store.update_job(ident, state="running")


@pytest.mark.parametrize("digest", ["0" * 64, "nothex", "A" * 64, "../" * 22])
def test_unknown_blobs_are_not_found(store: Store, digest: str) -> None:
    assert not store.has_blob(digest)
    with pytest.raises(NotFoundError):
        store.blob_path(digest)


# -- blobs, threads, the store lock ----------------------------------------------------------


def test_put_blob_file_copies_and_keeps_the_source(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "model.glb"
    source.write_bytes(b"glTF" * 5000)
    digest = store.put_blob_file(source)
    assert digest == sha(source.read_bytes())
    assert store.blob_path(digest).read_bytes() == source.read_bytes()
    assert store.put_blob_file(source) == digest


def test_threads_share_one_store(store: Store, root: Path) -> None:
    contents = [random.Random(i).randbytes(200_000 + i) for i in range(8)]
    errors: list[BaseException] = []

    def work(data: bytes) -> None:
        try:
            upload(store, data, chunk=30_000)
            store.put_blob(data[::-1])
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work, args=(c,)) for c in contents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(blob_files(root)) == 16
    assert_blobs_sound(root)


def test_racing_chunks_for_one_offset_land_once(store: Store) -> None:
    data = b"r" * 100_000
    upload_id = start(store, data)
    results: list[object] = []
    barrier = threading.Barrier(4)

    def send() -> None:
        barrier.wait()
        try:
            results.append(store.append_chunk(upload_id, 0, data[:50_000]).offset)
        except OffsetError as err:
            results.append(err.expected)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [50_000] * 4
    assert store.get_upload(upload_id).offset == 50_000


def test_a_store_is_opened_once(root: Path) -> None:
    with Store(root), pytest.raises(HoloError, match="already open"):
        Store(root)
    Store(root).close()  # released on close
