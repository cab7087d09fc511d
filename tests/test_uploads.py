"""Uploads, study indexing and conversion workers under load, restarts and crafted input:
heavy work apart from every caller's store calls, fair between callers; uploads that
survive a restart; workers that die with their server; no upload names in logs and no
server paths in messages; zips bounded before they are expanded."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from holo.client import HoloClient
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

    def __call__(self, files: list[Any], salt: str) -> dict[str, Any]:
        self.began.append(files[0].name)
        if not self.released:
            self.gate.acquire(timeout=60)
        return self.real(files, salt)

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
