"""Uploads, study indexing and conversion workers under load, restarts and crafted input:
heavy work apart from every caller's store calls, fair between callers; uploads that
survive a restart; workers that die with their server; no upload names in logs and no
server paths in messages; zips bounded before they are expanded."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from holo.client import ClientError, HoloClient
from holo.imaging.summary import summarise_study
from holo.testing import ServeProcess, TestServer
from holo.v1 import asset_pb2


def _children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (Linux /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found.update(int(c) for c in (task / "children").read_text().split())
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its exit status waits for a reaper


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_conversion_workers_die_with_a_killed_server(tmp_path: Path, sample_ct: Path) -> None:
    server = ServeProcess(tmp_path / "store")
    try:
        with server.client("radiologist") as radiologist:
            study = radiologist.upload_study([sample_ct])
            job = radiologist.start_conversion(study.study_id.value)
            for state in radiologist.watch_job(job.job_id.value):
                if state.stage == "segment":  # the worker runs its conversion (3-4 s)
                    break
        workers = {p for p in _children(server.pid) if "spawn_main" in _cmdline(p)}
        assert workers, "no conversion worker running"
        # Stopped, a worker stands for one deep in a long stage (minutes on a full-body
        # CT): it never reaches its next report, where a broken pipe would end it.
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        server.kill()
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [p for p in workers if _alive(p)]
        for pid in left:  # do not leave them behind for the next test
            os.kill(pid, signal.SIGKILL)
        assert not left, f"workers {left} outlived their killed server"
    finally:
        if server.process.poll() is None:
            server.kill()


class HeldIndexing:
    """Stands in for heavy study indexing (a 70 MB study takes seconds): each call waits
    until the test lets it go, then indexes for real. Records the order calls began."""

    def __init__(self) -> None:
        self.real = summarise_study
        self.began: list[str] = []
        self.gate = threading.Semaphore(0)
        self.released = False

    def __call__(self, files: list[Any], salt: str, **options: Any) -> dict[str, Any]:
        self.began.append(files[0].name)
        if not self.released:
            self.gate.acquire(timeout=60)
        return self.real(files, salt, **options)

    def wait_began(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.began) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def release_all(self) -> None:
        self.released = True
        for _ in range(100):
            self.gate.release()


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldIndexing]:
    holder = HeldIndexing()
    monkeypatch.setattr("holo.server.upload_service.summarise_study", holder)
    try:
        yield holder
    finally:
        holder.release_all()


def _upload(client: HoloClient, path: Path, name: str) -> str:
    data = path.read_bytes()
    return str(client.upload_bytes(data, name).upload_id.value)


def _create_study(client: HoloClient, upload_id: str) -> asset_pb2.Study:
    return client.uploads.CreateStudy(
        asset_pb2.CreateStudyRequest(uploads=[asset_pb2.UploadId(value=upload_id)]),
        metadata=client._metadata,
        timeout=120,
    )


def test_heavy_indexing_leaves_every_callers_store_calls_free(
    tmp_path: Path, sample_ct: Path, held: HeldIndexing
) -> None:
    """Twelve studies indexing at once (more than the default executor's threads) do not
    hold an observer's ListModels; all twelve complete once their indexing may go on."""
    slice_ = sorted(sample_ct.iterdir())[0]
    with TestServer(tmp_path / "store") as server, server.client("radiologist") as radiologist:
        upload_id = _upload(radiologist, slice_, "CT_0001.dcm")
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            studies = [pool.submit(_create_study, radiologist, upload_id) for _ in range(12)]
            held.wait_began(2)
            time.sleep(0.5)  # the other ten reach the server and wait for their turn
            with server.client("observer") as observer:
                reply = observer.assets.ListModels(
                    asset_pb2.ListModelsRequest(), metadata=observer._metadata, timeout=10
                )
            assert list(reply.models) == []
            held.release_all()
            assert all(s.result(120).study_id.value for s in studies)


def test_indexing_takes_callers_in_turn(
    tmp_path: Path, sample_ct: Path, held: HeldIndexing
) -> None:
    """One radiologist's eight studies do not all go before a colleague's one: the
    colleague's starts as soon as a thread is free (third with two threads)."""
    slice_ = sorted(sample_ct.iterdir())[0]
    with TestServer(tmp_path / "store") as server:
        token_a = server.token("radiologist", subject="dr-a")
        token_b = server.token("radiologist", subject="dr-b")
        with (
            HoloClient(server.address, token=token_a, insecure=True) as a,
            HoloClient(server.address, token=token_b, insecure=True) as b,
            concurrent.futures.ThreadPoolExecutor(9) as pool,
        ):
            upload_a = _upload(a, slice_, "a.dcm")
            upload_b = _upload(b, slice_, "b.dcm")
            firsts = [pool.submit(_create_study, a, upload_a) for _ in range(8)]
            held.wait_began(2)
            time.sleep(0.5)  # a's other studies reach the server and queue
            second = pool.submit(_create_study, b, upload_b)
            time.sleep(0.5)  # b's study reaches the server and queues
            for began in range(2, 9):  # one indexing at a time goes on
                held.gate.release()
                held.wait_began(began + 1)
            held.release_all()
            assert all(s.result(120).study_id.value for s in [*firsts, second])
    assert len(held.began) == 9, held.began
    assert held.began.index("b.dcm") <= 2, held.began


HOLO = [sys.executable, "-m", "holo.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def big_study(tmp_path: Path, sample_ct: Path) -> Path:
    """The sample knee and, sorted last, 64 MiB of other data: long enough an upload to
    stop in the middle of (the study index skips a file that is no DICOM)."""
    folder = tmp_path / "study"
    shutil.copytree(sample_ct, folder)
    (folder / "zz_padding.bin").write_bytes(os.urandom(64 << 20))
    return folder


def _upload_command(server: ServeProcess, folder: Path) -> list[str]:
    token = server.token("radiologist")
    common = ["--server", server.address, "--insecure", "--token", token, "--json"]
    return [*HOLO, "upload", str(folder), *common]


def _wait_for_part(store: Path, at_least: int, process: subprocess.Popen[str]) -> None:
    """Until an unfinished upload in ``store`` has ``at_least`` bytes acknowledged. The
    catalogue's offset, not the .part file's size: the bytes reach the file before the
    offset is recorded, so the file can be a chunk ahead of what the server holds."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(sqlite3.Error):
            db = sqlite3.connect(store / "holo.sqlite3", timeout=1)
            with contextlib.closing(db):
                (held,) = db.execute(
                    'SELECT MAX("offset") FROM uploads WHERE complete = 0'
                ).fetchone()
            if held is not None and held >= at_least:
                return
        time.sleep(0.005)
    raise AssertionError("the upload never got that far")


def _uploads_named(store: Path, name: str) -> list[tuple[str, int, int]]:
    with contextlib.closing(sqlite3.connect(store / "holo.sqlite3")) as db:
        rows = db.execute(
            'SELECT upload_id, "offset", complete FROM uploads WHERE name = ?', (name,)
        ).fetchall()
    return [(str(r[0]), int(r[1]), int(r[2])) for r in rows]


def test_cli_upload_survives_a_server_restart(tmp_path: Path, big_study: Path) -> None:
    """The server is killed mid-upload and back 5 s later (longer than the ~3 s the CLI
    once retried): the same command finishes, resuming the upload the server held."""
    store, port = tmp_path / "store", _free_port()
    server = ServeProcess(store, port=port)
    upload = subprocess.Popen(
        _upload_command(server, big_study),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_part(store, 16 << 20, upload)
        server.kill()
        time.sleep(5)  # a slow restart
        server = ServeProcess(store, port=port)
        out, err = upload.communicate(timeout=120)
        assert upload.returncode == 0, err
        assert json.loads(out)["study"]["study_id"]["value"]
    finally:
        if upload.poll() is None:
            upload.kill()
        server.stop()
    # One upload of the big file, completed: resumed, not sent again under a new id.
    assert [row[2] for row in _uploads_named(store, "zz_padding.bin")] == [1]
    assert not list((store / "uploads").glob("*.part"))


def test_cli_upload_run_again_resumes_the_servers_upload(tmp_path: Path, big_study: Path) -> None:
    """The CLI is killed mid-upload; run again, it goes on from the server's offset."""
    store = tmp_path / "store"
    server = ServeProcess(store)
    try:
        command = _upload_command(server, big_study)
        first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for_part(store, 16 << 20, first)
        first.kill()
        first.communicate(timeout=30)
        (held,) = _uploads_named(store, "zz_padding.bin")
        assert held[1] >= 16 << 20 and held[2] == 0
        again = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
    finally:
        server.stop()
    # The held upload was finished: no second upload of the file, no partial file left.
    assert _uploads_named(store, "zz_padding.bin") == [(held[0], 64 << 20, 1)]
    assert not list((store / "uploads").glob("*.part"))


def _start_partial_upload(client: HoloClient, data: bytes) -> str:
    status = client.uploads.StartUpload(
        asset_pb2.StartUploadRequest(
            name="partial.bin", size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
        ),
        metadata=client._metadata,
    )
    client.uploads.UploadChunk(
        asset_pb2.UploadChunkRequest(upload_id=status.upload_id, offset=0, data=data[:1000]),
        metadata=client._metadata,
    )
    return str(status.upload_id.value)


def test_abandoned_uploads_expire_while_serving_and_at_start(tmp_path: Path) -> None:
    data = os.urandom(5000)
    store = tmp_path / "store"
    server = TestServer(store)
    server.config.upload_max_age_s = 1.0
    with server, server.client("radiologist") as client:
        upload_id = _start_partial_upload(client, data)
        assert (store / "uploads" / f"{upload_id}.part").exists()
        deadline = time.monotonic() + 30
        while (store / "uploads" / f"{upload_id}.part").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (store / "uploads" / f"{upload_id}.part").exists()
        with pytest.raises(grpc.RpcError) as gone:
            client.uploads.GetUpload(
                asset_pb2.GetUploadRequest(upload_id=asset_pb2.UploadId(value=upload_id)),
                metadata=client._metadata,
            )
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
        kept = _start_partial_upload(client, data)  # abandoned while the server is down
    time.sleep(1.5)
    server = TestServer(store)
    server.config.upload_max_age_s = 1.0
    with server:  # gone before the server serves
        assert not (store / "uploads" / f"{kept}.part").exists()
        assert server.running is not None
        assert server.running.store.expire_uploads(1.0) == 0  # nothing left of it


def test_verbose_server_log_names_no_uploaded_file(tmp_path: Path, sample_ct: Path) -> None:
    """Upload names are often the patient's: a verbose server's log (its conversion
    workers' included) holds no part of them after an upload, a study and a conversion
    that warns about one of the files (a slice repeated under another name)."""
    folder = tmp_path / "study"
    folder.mkdir()
    slices = sorted(sample_ct.iterdir())
    for i, path in enumerate(slices):
        shutil.copy(path, folder / f"Doe^Jane_{i:04d}.dcm")
    shutil.copy(slices[50], folder / "Doe^Jane_repeat.dcm")  # the reader warns about it
    server = ServeProcess(tmp_path / "store", verbose=True)
    try:
        with server.client("radiologist") as radiologist:
            study = radiologist.upload_study([folder])
            job = radiologist.start_conversion(study.study_id.value)
            done = radiologist.wait_job(job.job_id.value)
            assert done.state == asset_pb2.JOB_STATE_SUCCEEDED, done.message
    finally:
        server.stop()
    log = "".join(server.lines)
    assert "upload" in log and "study" in log  # verbose indeed
    for part in ("Doe", "Jane", "repeat"):
        assert part not in log, [line for line in server.lines if part in line]


def _bomb(path: Path, members: int, member_bytes: int) -> None:
    """A zip of ratio ~100 (under the 200 a bomb is refused at by ratio alone): each
    member 1% random, the rest zeros."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(members):
            body = os.urandom(member_bytes // 100) + bytes(member_bytes - member_bytes // 100)
            zf.writestr(f"Doe_Jane/IM{i:05d}.dcm", body)


def test_a_zip_over_the_expansion_bound_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    bomb = tmp_path / "bomb.zip"
    _bomb(bomb, members=96, member_bytes=1 << 20)  # 96 MiB from about 1 MiB
    store = tmp_path / "store"
    server = TestServer(store)
    server.config.max_unzipped_bytes = 64 << 20
    with server, server.client("radiologist") as radiologist:
        with pytest.raises(ClientError) as refused:
            radiologist.upload_study([bomb])
        message = str(refused.value)
        assert message.startswith("INVALID_ARGUMENT: bomb.zip: the zip expands to "), message
        assert f"over the limit of {64 << 20}" in message and "\n" not in message, message
        for leak in (str(tmp_path), "/tmp", "blobs", "holo-"):
            assert leak not in message, message
        # Nothing was inflated: the scratch space holds no member, not even a folder.
        assert not any((store / "tmp").iterdir())
        assert radiologist.list_studies() == []


def test_a_zipped_study_is_read_in_the_data_folder_and_converts(
    tmp_path: Path, sample_ct: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Indexing and conversion of a zipped study leave the system's temporary folder
    alone: the members are inflated in the store's scratch space."""
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(system_tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    knee = tmp_path / "knee.zip"
    with zipfile.ZipFile(knee, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(sample_ct.iterdir()):
            zf.write(path, f"knee/{path.name}")
    with (
        TestServer(tmp_path / "store") as server,
        server.client("radiologist") as radiologist,
    ):
        watcher = _ScratchWatcher(system_tmp)
        study = radiologist.upload_study([knee])
        done = radiologist.wait_job(radiologist.start_conversion(study.study_id.value).job_id.value)
        watcher.stop()
        assert done.state == asset_pb2.JOB_STATE_SUCCEEDED, done.message
    assert watcher.seen == set(), watcher.seen


class _ScratchWatcher:
    """Polls a folder and notes every entry that appears in it."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.seen = folder, set[str]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen.update(p.name for p in self.folder.iterdir())
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_job_errors_name_the_uploads_files_not_server_paths(tmp_path: Path) -> None:
    """A library's exception text carried into a job's error (pydicom names the file it
    re-opens, an OSError its path) names the upload's file, never a server path."""
    from holo.jobs import public_message

    store = tmp_path / "data"
    blob = store / "blobs" / "ab" / "cdef0123"
    job = store / "tmp" / "job_1.x7"
    member = job / "holo-zip-q1" / "000003" / "Doe_Jane_0003.dcm"
    files = [("scan.zip", str(blob)), ("CT_0001.dcm", str(store / "blobs" / "12" / "3456"))]
    folders = [str(store), "/tmp", str(job)]
    cases = {
        f"scan.zip/x.dcm: cannot decode (Deferred read -- original file {member} is missing)": (
            "scan.zip/x.dcm: cannot decode (Deferred read -- original file Doe_Jane_0003.dcm "
            "is missing)"
        ),
        f"CT_0001.dcm: damaged ([Errno 5] Input/output error: '{files[1][1]}')": (
            "CT_0001.dcm: damaged ([Errno 5] Input/output error: 'CT_0001.dcm')"
        ),
        "could not write thumbnail /tmp/holo-x/front.png (full)": (
            "could not write thumbnail front.png (full)"
        ),
        f"{blob}: not a zip": "scan.zip: not a zip",
        f"in {store}": "in a server folder",
    }
    for message, public in cases.items():
        got = public_message(message, files, folders)
        assert got == public, got
        for leak in (str(tmp_path), "/tmp", "blobs", "holo-zip"):
            assert leak not in got, got
