"""``holo serve`` as a separate process: the CLI, SIGTERM, kill -9, and connections cut at
random offsets (through a real TCP proxy that drops them)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from holo.client import ClientError, HoloClient
from holo.client.retry import RetryPolicy
from holo.testing import ServeProcess, TestServer
from holo.v1 import asset_pb2

HOLO = [sys.executable, "-m", "holo.cli"]
CASE = "case-1"


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HOLO, *args], capture_output=True, text=True, timeout=300, env=env)


def _check_blobs(store: Path) -> int:
    """Every blob's content hashes to its name; returns how many there are."""
    blobs = [p for p in (store / "blobs").rglob("*") if p.is_file()]
    for blob in blobs:
        digest = hashlib.sha256(blob.read_bytes()).hexdigest()
        assert digest.endswith(blob.name) and digest.startswith(blob.parent.name), blob
    return len(blobs)


def test_cli_round_trip_and_graceful_sigterm(
    store_dir: Path, sample_ct: Path, tmp_path: Path
) -> None:
    server = ServeProcess(store_dir)
    try:
        token = _run("token", "--data", str(store_dir), "--role", "radiologist", "--case", CASE)
        assert token.returncode == 0, token.stderr
        common = [
            "--server",
            server.address,
            "--insecure",
            "--token",
            token.stdout.strip(),
            "--json",
        ]
        upload = _run("upload", str(sample_ct), "--convert", *common)
        assert upload.returncode == 0, upload.stderr
        result = json.loads(upload.stdout)
        assert result["job"]["state"] == "JOB_STATE_SUCCEEDED", result["job"]
        model_id = result["job"]["model_id"]["value"]
        models = json.loads(_run("models", *common).stdout)["models"]
        assert [m["model_id"]["value"] for m in models] == [model_id]
        fetched = _run("fetch", model_id, "-o", str(tmp_path / "knee.glb"), *common)
        assert fetched.returncode == 0, fetched.stderr
        summary = json.loads(fetched.stdout)
        assert summary["bytes"] == (tmp_path / "knee.glb").stat().st_size > 0
        assert 0 < summary["seconds_to_manifest"] <= summary["seconds_to_first_lod"]
        assert summary["seconds_to_first_lod"] <= summary["seconds_total"]
        jobs = json.loads(_run("jobs", *common).stdout)["jobs"]
        assert jobs[0]["state"] == "JOB_STATE_SUCCEEDED"
        observer = _run("token", "--data", str(store_dir), "--role", "observer", "--case", CASE)
        denied = _run("upload", str(sample_ct), *common[:-3], "--token", observer.stdout.strip())
        assert denied.returncode == 2
        assert (
            denied.stderr.startswith("holo: error: PERMISSION_DENIED")
            and denied.stderr.count("\n") == 1
        )
    finally:
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0


def test_cli_refuses_plain_text_beyond_loopback(store_dir: Path) -> None:
    result = _run("serve", "--data", str(store_dir), "--listen", "0.0.0.0:0", "--insecure")
    assert result.returncode == 2
    assert "not a loopback address" in result.stderr and result.stderr.count("\n") == 1
    result = _run("serve", "--data", str(store_dir), "--listen", "127.0.0.1:0")
    assert result.returncode == 2 and "--tls-cert" in result.stderr


def test_cli_serve_on_a_taken_port_says_so_in_one_line(store_dir: Path, tmp_path: Path) -> None:
    def serve_on(listen: str) -> subprocess.CompletedProcess[str]:
        return _run("serve", "--data", str(tmp_path / "second"), "--listen", listen, "--insecure")

    with socket.socket() as taken:  # a port held by something else
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = serve_on(f"127.0.0.1:{taken.getsockname()[1]}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("holo: error: cannot listen on 127.0.0.1:")
    assert "in use" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    server = ServeProcess(store_dir)  # a port held by another holo serve
    try:
        result = serve_on(server.address)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"holo: error: cannot listen on {server.address}")
        assert result.stderr.count("\n") == 1, result.stderr
        with server.client("observer") as observer:  # the first server still serves alone
            assert observer.list_models() == []
    finally:
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0


def test_kill_9_during_uploads_leaves_the_store_consistent(store_dir: Path) -> None:
    rng = random.Random(20261201)
    content = rng.randbytes(24 << 20)
    sha = hashlib.sha256(content).hexdigest()
    upload_id = ""
    # Kill the server three times while chunks stream in, at random points of the upload.
    for low, high in ((0.1, 0.25), (0.35, 0.5), (0.6, 0.75)):
        server = ServeProcess(store_dir)
        target = int(rng.uniform(low, high) * len(content))
        acknowledged = [0]
        with server.client("radiologist", retry=RetryPolicy(attempts=0)) as radiologist:
            if not upload_id:
                status = radiologist.uploads.StartUpload(
                    asset_pb2.StartUploadRequest(
                        name="big.bin", size_bytes=len(content), sha256=sha
                    ),
                    metadata=radiologist._metadata,
                )
                upload_id = status.upload_id.value

            def send(
                radiologist: HoloClient = radiologist,
                upload_id: str = upload_id,
                acknowledged: list[int] = acknowledged,
            ) -> None:
                stub, md = radiologist.uploads, radiologist._metadata
                ident = asset_pb2.UploadId(value=upload_id)
                try:
                    offset = stub.GetUpload(
                        asset_pb2.GetUploadRequest(upload_id=ident), metadata=md
                    ).offset
                    while offset < len(content):
                        piece = content[offset : offset + (256 << 10)]
                        reply = stub.UploadChunk(
                            asset_pb2.UploadChunkRequest(
                                upload_id=ident, offset=offset, data=piece
                            ),
                            metadata=md,
                        )
                        offset = acknowledged[0] = reply.offset
                except grpc.RpcError:
                    pass  # the server was killed under us

            sender = threading.Thread(target=send)
            sender.start()
            deadline = time.monotonic() + 60
            while acknowledged[0] < target and sender.is_alive() and time.monotonic() < deadline:
                time.sleep(0.002)
            server.kill()  # while the next chunks are in flight
            sender.join(30)
        assert acknowledged[0] >= target, "the upload stopped before the kill point"
        _check_blobs(store_dir)
        part = store_dir / "uploads" / f"{upload_id}.part"
        assert not part.exists() or part.stat().st_size <= len(content)
    server = ServeProcess(store_dir)
    try:
        with server.client("radiologist") as radiologist:
            before = radiologist._resume(
                asset_pb2.UploadStatus(upload_id=asset_pb2.UploadId(value=upload_id))
            )
            # Every acknowledged byte survived the kills; the upload is not yet complete.
            assert acknowledged[0] <= before.offset < len(content)
            status = before
            while not status.complete:  # resume the killed upload where it stands
                status = radiologist.uploads.UploadChunk(
                    asset_pb2.UploadChunkRequest(
                        upload_id=status.upload_id,
                        offset=status.offset,
                        data=content[status.offset : status.offset + (1 << 20)],
                    ),
                    metadata=radiologist._metadata,
                )
            assert status.sha256 == sha
        blob = store_dir / "blobs" / sha[:2] / sha[2:]
        assert blob.read_bytes() == content
        _check_blobs(store_dir)
    finally:
        server.kill()


def test_kill_9_during_a_conversion_reports_it_failed(store_dir: Path, sample_ct: Path) -> None:
    server = ServeProcess(store_dir)
    with server.client("radiologist") as radiologist:
        study = radiologist.upload_study([sample_ct])
        done = radiologist.wait_job(radiologist.start_conversion(study.study_id.value).job_id.value)
        assert done.state == asset_pb2.JOB_STATE_SUCCEEDED, done.message
        model = radiologist.fetch_model(done.model_id.value).data
        job = radiologist.start_conversion(study.study_id.value, preset="skin")
        for state in radiologist.watch_job(job.job_id.value):
            if state.state == asset_pb2.JOB_STATE_RUNNING:
                break
        server.kill()
    server = ServeProcess(store_dir)
    try:
        with server.client("radiologist") as radiologist:
            final = radiologist.wait_job(job.job_id.value)
            assert final.state == asset_pb2.JOB_STATE_FAILED
            assert "restart" in final.message
            assert [s.study_id.value for s in radiologist.list_studies()] == [study.study_id.value]
            # The finished model survived the kill, byte for byte; no half model was published.
            assert [m.model_id.value for m in radiologist.list_models()] == [done.model_id.value]
            assert radiologist.fetch_model(done.model_id.value).data == model
    finally:
        server.kill()


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 that drops each connection after a random number of bytes."""

    def __init__(self, target_port: int, rng: random.Random, budget: tuple[int, int]) -> None:
        self.rng, self.budget, self.target = rng, budget, target_port
        self.cuts = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tasks: set[asyncio.Task[None]] = set()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self.loop
        ).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        left = [self.rng.randint(*self.budget)]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    left[0] -= len(data)
                    if left[0] < 0:  # cut mid-message: forward part of it, then drop both
                        dst.write(data[: len(data) + left[0]])
                        self.cuts += 1
                        break
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                for w in (writer, up_writer):
                    w.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except asyncio.CancelledError:
            pass  # the proxy is closing
        finally:
            self.tasks.discard(task)

    async def _shutdown(self) -> None:
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def cut_server(tmp_path: Path) -> Iterator[TestServer]:
    # 16 KiB model chunks: a download resumes at chunk boundaries, and the knee is small.
    with TestServer(tmp_path / "store", model_chunk_bytes=16 << 10) as server:
        yield server


def test_upload_and_download_cut_at_random_offsets_resume(cut_server: TestServer) -> None:
    rng = random.Random(7)
    content = rng.randbytes(6 << 20)
    proxy = CuttingProxy(cut_server.port, rng, budget=(300_000, 2_500_000))
    try:
        token = cut_server.token("radiologist")
        with HoloClient(
            f"127.0.0.1:{proxy.port}", token=token, insecure=True, retry=RetryPolicy(attempts=10)
        ) as c:
            status = c.upload_bytes(content, "cut.bin")
        assert status.complete and status.size_bytes == len(content)
        assert proxy.cuts >= 2, "the proxy never cut the upload: the test proves nothing"
        assert cut_server.running is not None
        assert cut_server.running.store.blob_path(status.sha256).read_bytes() == content
    finally:
        proxy.close()


def test_fetch_cut_at_random_offsets_resumes(cut_server: TestServer, sample_ct: Path) -> None:
    with cut_server.client("radiologist") as radiologist:
        study = radiologist.upload_study([sample_ct])
        final = radiologist.wait_job(
            radiologist.start_conversion(study.study_id.value).job_id.value
        )
        whole = radiologist.fetch_model(final.model_id.value).data
    # Budgets well under the model's size, so every fetch is cut at least once.
    budget = (len(whole) // 6, len(whole) // 2)
    proxy = CuttingProxy(cut_server.port, random.Random(11), budget=budget)
    try:
        token = cut_server.token("observer")
        with HoloClient(
            f"127.0.0.1:{proxy.port}", token=token, insecure=True, retry=RetryPolicy(attempts=20)
        ) as c:
            result = c.fetch_model(final.model_id.value)
        assert result.data == whole
        assert proxy.cuts >= 1, "the proxy never cut the download: the test proves nothing"
    finally:
        proxy.close()


def test_client_errors_name_the_status(cut_server: TestServer) -> None:
    with (
        HoloClient(cut_server.address, token="", insecure=True) as anonymous,
        pytest.raises(ClientError, match=r"^UNAUTHENTICATED: "),
    ):
        anonymous.list_jobs()


def test_readme_quick_start_with_a_relative_data_folder(tmp_path: Path, sample_ct: Path) -> None:
    """As a new user types it (README): `holo serve --data ./holo-data ... --insecure` from
    a working folder, then `holo upload sample_data/knee_ct --convert --insecure`. The
    uploaded files are read where the store keeps them, under their upload names, whatever
    the server's working folder (a relative --data once left dangling links)."""
    work = tmp_path / "work"
    work.mkdir()
    server = ServeProcess("./holo-data", cwd=work)
    try:
        token = subprocess.run(
            [*HOLO, "token", "--data", "./holo-data", "--role", "radiologist", "--case", CASE],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=work,
            check=True,
        ).stdout.strip()
        common = ["--server", server.address, "--insecure", "--token", token, "--json"]
        upload = subprocess.run(
            [*HOLO, "upload", str(sample_ct), "--convert", *common],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=work,
        )
        assert upload.returncode == 0, upload.stderr
        job = json.loads(upload.stdout)["job"]
        assert job["state"] == "JOB_STATE_SUCCEEDED", job
        assert (work / "holo-data" / "holo.sqlite3").is_file()
    finally:
        assert server.stop() == 0


def test_messages_about_an_upload_name_its_files_not_the_servers(tmp_path: Path) -> None:
    """A study made of files that are no DICOM is refused in one line naming the files as
    they were uploaded: no scratch folder, no blob path, no hash."""
    folder = tmp_path / "not-a-study"
    folder.mkdir()
    (folder / "notes.txt").write_text("operative notes, not an image\n")
    (folder / "scan.dcm").write_bytes(b"\0" * 200)
    with (
        TestServer(tmp_path / "store") as server,
        server.client("radiologist") as client,
        pytest.raises(ClientError) as err,
    ):
        client.upload_study([folder])
    message = str(err.value)
    assert message.startswith("INVALID_ARGUMENT: notes.txt") and "scan.dcm" in message, message
    for leak in (str(tmp_path), "/tmp", "blobs", "holo-"):
        assert leak not in message, message


def test_a_quiet_stream_outlives_the_clients_keepalive_pings(tmp_path: Path) -> None:
    """A stream with nothing to say for a while (a long conversion's WatchJob, a quiet
    session) stays open while its client pings the connection. The SDK pings every 20 s;
    this client every 10.5 s, just above the 10 s the server allows, so that the server's
    gRPC default (pings no closer than 5 min, 2 strikes) would close the connection
    with GOAWAY "too_many_pings" within this test's 45 s."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    options = [
        ("grpc.keepalive_time_ms", 10_500),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.http2.max_pings_without_data", 0),  # keep pinging a silent stream
    ]
    with TestServer(tmp_path / "data") as server:
        channel = grpc.insecure_channel(server.address, options=options)
        stub = health_pb2_grpc.HealthStub(channel)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        time.sleep(45)  # four pings and no message
        assert watch.running(), (watch.code(), watch.details())
        watch.cancel()
        channel.close()
