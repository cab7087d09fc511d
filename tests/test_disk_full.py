"""A full disk, for real: ``holo serve`` with its data folder on a small tmpfs, filled.

Every write then fails with ENOSPC (SQLite: SQLITE_FULL) as on a full production disk. A
full disk must be refused in one line (RESOURCE_EXHAUSTED, naming the data folder, not its
path), leave nothing half-applied (no ghost participant, no half line in the audit log),
free what an upload held, show in health, and let the server stop cleanly. Mounting needs
root (CI runs as root); elsewhere these tests skip, saying so.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from health_checks import NOT_SERVING, SERVING, health_of, wait_health

from holo.audit import AuditLog, AuditRecord
from holo.client import ClientError
from holo.client.session import SessionClient
from holo.errors import DiskFullError, InvalidRequestError, disk_full
from holo.store.space import parse_min_free
from holo.testing import ServeProcess
from holo.v1 import asset_pb2, asset_pb2_grpc

CASE = "case-1"
DISK_MIB = 24
MiB = 1 << 20
UPLOADS = "holo.v1.UploadService"
CONVERSIONS = "holo.v1.ConversionService"
SESSIONS = "holo.v1.SessionService"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A fresh 24 MiB tmpfs: a real file system that fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    why = "mounting a tmpfs needs root" if os.geteuid() != 0 else ""
    if not why:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs", str(mount)],
            capture_output=True,
            text=True,
        )
        why = "" if done.returncode == 0 else f"mount -t tmpfs failed: {done.stderr.strip()}"
    if why:
        message = f"no small file system to fill: {why}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Write a file until the disk refuses another byte (ENOSPC); return it."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for block in (MiB, 4096, 1):
            try:
                while True:
                    fh.write(b"\0" * block)
            except OSError as err:
                assert err.errno == errno.ENOSPC, err
    return filler


def free_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def uploads_stub(node: ServeProcess) -> tuple[asset_pb2_grpc.UploadServiceStub, tuple]:
    channel = grpc.insecure_channel(node.address)
    token = node.token("radiologist", CASE)
    return asset_pb2_grpc.UploadServiceStub(channel), (("authorization", f"Bearer {token}"),)


def start_upload(node: ServeProcess, data: bytes) -> asset_pb2.UploadStatus:
    stub, metadata = uploads_stub(node)
    request = asset_pb2.StartUploadRequest(
        case_id=CASE, name="IM0001", size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    status: asset_pb2.UploadStatus = stub.StartUpload(request, metadata=metadata, timeout=30)
    return status


def send_chunk(node: ServeProcess, upload_id: str, offset: int, data: bytes) -> int:
    stub, metadata = uploads_stub(node)
    request = asset_pb2.UploadChunkRequest(
        upload_id=asset_pb2.UploadId(value=upload_id), offset=offset, data=data
    )
    status = stub.UploadChunk(request, metadata=metadata, timeout=30)
    return int(status.offset)


def refused(call: object) -> grpc.RpcError:
    """The RpcError a call raised, which must be a one-line RESOURCE_EXHAUSTED about the
    disk that names the data folder but not where it is."""
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    err = caught.value
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (err.code(), err.details())
    details = err.details()
    assert "disk" in details and "'data'" in details and "\n" not in details, details
    assert "/" not in details, details  # no server path
    return err


def stop_cleanly(node: ServeProcess) -> None:
    assert node.stop() == 0, "".join(node.lines)
    assert not any("Traceback" in line for line in node.lines), "".join(node.lines)


def test_an_upload_that_meets_a_full_disk_is_dropped_and_frees_it(disk: Path) -> None:
    """Something fills the disk during an upload: its next chunk is refused with
    RESOURCE_EXHAUSTED, the upload is dropped (its file and its record), so its bytes are
    free again and the server takes the next upload; then it stops cleanly."""
    node = ServeProcess(disk / "data", min_free="0")
    try:
        data = os.urandom(8 * MiB)
        upload = start_upload(node, data)
        upload_id = upload.upload_id.value
        offset = 0
        for _ in range(3):
            offset = send_chunk(node, upload_id, offset, data[offset : offset + MiB])
        assert offset == 3 * MiB
        filler = fill(disk)
        assert free_bytes(disk) < MiB
        err = refused(lambda: send_chunk(node, upload_id, offset, data[offset : offset + MiB]))
        assert upload_id in err.details() and "upload the file again" in err.details()
        assert list((disk / "data" / "uploads").iterdir()) == []  # the file went
        assert free_bytes(disk) > 2 * MiB  # ... and so did its 3 MiB (less a few WAL pages)
        stub, metadata = uploads_stub(node)
        with pytest.raises(grpc.RpcError) as gone:  # ... and its record
            stub.GetUpload(
                asset_pb2.GetUploadRequest(upload_id=asset_pb2.UploadId(value=upload_id)),
                metadata=metadata,
            )
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
        # The freed space serves the next upload, the filler still in place.
        small = b"next study file"
        status = start_upload(node, small)
        assert send_chunk(node, status.upload_id.value, 0, small) == len(small)
        filler.unlink()
    finally:
        stop_cleanly(node)


def test_a_full_disk_refuses_cleanly_shows_in_health_and_recovers(disk: Path) -> None:
    """On a full disk: StartUpload and Join answer RESOURCE_EXHAUSTED in one line, the
    refused join leaves no participant behind and no half line in the audit log, health
    says NOT_SERVING (sessions still SERVING); with space back, all works again; and a
    SIGTERM on a full disk stops the server with status 0, no traceback."""
    node = ServeProcess(disk / "data", min_free="0")
    try:

        async def body() -> None:
            presenter = SessionClient(node.address, token=node.token("presenter"), insecure=True)
            info = await presenter.create_session()
            session_id = info.session_id.value
            await presenter.join(session_id)
            filler = fill(disk)
            refused(lambda: start_upload(node, b"a study file"))
            # Joins go on while the audit log's last block has room; the first that needs
            # a new block is refused.
            experts: list[SessionClient] = []
            for _ in range(100):
                expert = SessionClient(node.address, token=node.token("expert"), insecure=True)
                experts.append(expert)
                try:
                    await expert.join(session_id, timeout_s=20)
                except ClientError as err:
                    assert "RESOURCE_EXHAUSTED" in str(err) and "disk is full" in str(err), err
                    break
            else:
                raise AssertionError("100 joins were audited on a full disk")
            # Nothing needs the disk to find the session: CreateSession still answers.
            assert (await presenter.create_session()).session_id.value == session_id
            wait_health(node, "", NOT_SERVING)
            assert health_of(node, UPLOADS) == NOT_SERVING
            assert health_of(node, SESSIONS) == SERVING

            filler.unlink()
            wait_health(node, "", SERVING)
            assert health_of(node, UPLOADS) == SERVING
            observer = SessionClient(node.address, token=node.token("observer"), insecure=True)
            await observer.join(session_id)
            await observer.wait_for(lambda c: c.participant_id in c.state.participants)
            # Every participant was audited, and the refused expert is not one (no ghost).
            lines = (disk / "data" / "audit.jsonl").read_text().splitlines()
            audited = {json.loads(line)["participant_id"] for line in lines if '"joined"' in line}
            assert set(observer.state.participants) == audited
            # the presenter, the experts let in (all but the last) and the observer
            assert len(audited) == len(experts) + 1
            data = b"a study file"
            status = start_upload(node, data)
            assert send_chunk(node, status.upload_id.value, 0, data) == len(data)
            for client in (observer, presenter, *experts):
                await client.close()

        asyncio.run(asyncio.wait_for(body(), 120))
        fill(disk)
    finally:
        stop_cleanly(node)


def test_a_conversion_that_meets_a_full_disk_fails_saying_so_and_loses_nothing(
    disk: Path, sample_ct: Path
) -> None:
    """The disk fills while a conversion runs: the job ends FAILED in one line naming the
    data folder (not its path), and its watcher hears it at once although the catalog
    cannot record it then (SQLite is full too: a job left RUNNING would hold WatchJob open
    for ever); the model made earlier stays byte-identical, conversions show NOT_SERVING
    until space is freed, and the same study then converts again."""
    node = ServeProcess(disk / "data", min_free="0")
    try:
        with node.client("radiologist", CASE) as radiologist:
            study_id = radiologist.upload_study([sample_ct]).study_id.value
            first = radiologist.wait_job(radiologist.start_conversion(study_id).job_id.value)
            assert first.state == asset_pb2.JOB_STATE_SUCCEEDED, first.message
            before = radiologist.fetch_model(first.model_id.value).data

            job_id = radiologist.start_conversion(study_id).job_id.value
            states = radiologist.watch_job(job_id, timeout_s=120)
            for state in states:  # the worker has started: fill the disk under it
                if state.state == asset_pb2.JOB_STATE_RUNNING:
                    break
            filler = fill(disk)
            final = [*states][-1]
            assert final.state == asset_pb2.JOB_STATE_FAILED, (final.state, final.message)
            message = final.message
            assert "disk is full" in message and "'data'" in message, message
            assert "\n" not in message and "/" not in message, message
            wait_health(node, CONVERSIONS, NOT_SERVING)
            # Readers see the failure too, before the catalog has it.
            listed = {j.job_id.value: j for j in radiologist.list_jobs()}
            assert listed[job_id].state == asset_pb2.JOB_STATE_FAILED

            filler.unlink()
            wait_health(node, CONVERSIONS, SERVING)
            assert radiologist.fetch_model(first.model_id.value).data == before
            again = radiologist.wait_job(radiologist.start_conversion(study_id).job_id.value)
            assert again.state == asset_pb2.JOB_STATE_SUCCEEDED, again.message
            models = {m.model_id.value for m in radiologist.list_models()}
            assert models == {first.model_id.value, again.model_id.value}
        # ... and the failure reached the catalog once there was space: it survives a
        # restart as it was (not as "interrupted").
        stop_cleanly(node)
        node = ServeProcess(disk / "data", min_free="0")
        with node.client("radiologist", CASE) as radiologist:
            (stored,) = [j for j in radiologist.list_jobs() if j.job_id.value == job_id]
            assert (stored.state, stored.message) == (asset_pb2.JOB_STATE_FAILED, message)
    finally:
        stop_cleanly(node)


def test_new_uploads_are_refused_below_the_reserve(disk: Path) -> None:
    """``--min-free 12M``: an upload that would leave less is refused at once (before a
    byte is sent); one that fits is taken; once something else eats into the reserve,
    health says so and uploads wait until space is freed."""
    node = ServeProcess(disk / "data", min_free="12M")
    try:
        big = os.urandom(16 * MiB)
        err = refused(lambda: start_upload(node, big))
        assert "12 MiB are kept" in err.details(), err.details()
        assert list((disk / "data" / "uploads").iterdir()) == []
        fits = os.urandom(4 * MiB)
        status = start_upload(node, fits)
        offset = 0
        while offset < len(fits):
            offset = send_chunk(node, status.upload_id.value, offset, fits[offset : offset + MiB])
        assert health_of(node, "") == SERVING
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (free_bytes(disk) - 8 * MiB))
        wait_health(node, "", NOT_SERVING)
        refused(lambda: start_upload(node, b"one more file"))
        filler.unlink()
        wait_health(node, "", SERVING)
        start_upload(node, b"one more file")
    finally:
        stop_cleanly(node)


def test_the_audit_log_refuses_whole_batches_on_a_full_disk(disk: Path) -> None:
    """A record the disk cannot take fails with DiskFullError and leaves no part of a line;
    the log takes records again once there is space, and closes without an error."""
    log = AuditLog(disk / "audit.jsonl")
    try:
        log.submit(AuditRecord("joined", "alice", CASE, participant_id="p_1")).result(10)
        filler = fill(disk)
        with pytest.raises(DiskFullError, match="disk is full; free space in its data folder"):
            log.submit(AuditRecord("joined", "bob", CASE, why="x" * 10_000)).result(10)
        filler.unlink()
        log.submit(AuditRecord("left", "alice", CASE, participant_id="p_1")).result(10)
    finally:
        log.close()
    lines = (disk / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["joined", "left"]


@pytest.mark.parametrize(
    ("error", "full"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (OSError(errno.EACCES, "Permission denied"), False),
        (ValueError("no"), False),
    ],
)
def test_disk_full_knows_a_full_disk_and_names_only_the_folder(
    error: BaseException, full: bool
) -> None:
    found = disk_full(error, "/srv/secret/place/holo-data")
    assert (found is not None) is full
    if found is not None:
        assert "'holo-data'" in found.message and "/srv" not in found.message


def test_disk_full_knows_sqlite_full(tmp_path: Path) -> None:
    """SQLite's own SQLITE_FULL, raised by a real database at its page limit."""
    db = sqlite3.connect(tmp_path / "small.sqlite3")
    db.execute("PRAGMA max_page_count = 2")
    with pytest.raises(sqlite3.Error) as caught:
        db.execute("CREATE TABLE t (x BLOB)")
        db.execute("INSERT INTO t VALUES (randomblob(100000))")
    db.close()
    assert disk_full(caught.value, tmp_path) is not None
    assert disk_full(sqlite3.OperationalError("no such table: t"), tmp_path) is None


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("0", 0), ("512M", 512 << 20), ("2G", 2 << 30), ("1GiB", 1 << 30), ("10%", 10 << 30)],
)
def test_min_free_reads_sizes_and_shares(spec: str, expected: int) -> None:
    assert parse_min_free(spec, 100 << 30) == expected


def test_min_free_default_is_the_smaller_of_1g_and_5_percent() -> None:
    assert parse_min_free("1G,5%", 100 << 30) == 1 << 30
    assert parse_min_free("1G,5%", 10 << 30) == (10 << 30) // 20


@pytest.mark.parametrize("spec", ["", "lots", "-1G", "150%", "1X"])
def test_min_free_refuses_what_it_cannot_read(spec: str) -> None:
    with pytest.raises(InvalidRequestError, match="--min-free"):
        parse_min_free(spec, 100 << 30)


def test_a_waiter_that_gives_up_does_not_stop_the_audit_log(tmp_path: Path) -> None:
    """A call cancelled while its record is written (a page closed mid-join) must not kill
    the writer: every later record is written and acknowledged, the cancelled ones too."""
    log = AuditLog(tmp_path / "audit.jsonl")

    async def scenario() -> None:
        waiters = [
            asyncio.ensure_future(log.record("joined", f"user-{n}", CASE, participant_id="p"))
            for n in range(50)
        ]
        await asyncio.sleep(0)
        for waiter in waiters:  # given up before or while the writer writes
            waiter.cancel()
        await asyncio.wait_for(log.record("left", "after", CASE, participant_id="p"), 10)

    try:
        asyncio.run(scenario())
    finally:
        log.close()
    actions = [
        json.loads(line)["subject"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()
    ]
    assert actions[-1] == "after"
    assert len(actions) == 51


def test_a_recording_that_meets_a_full_disk_stops_saying_so(disk: Path) -> None:
    """The disk fills while a session with pushed video is recorded: StopRecording says
    the recording stopped early because the disk is full (in one line, naming no server
    path), what was written before stays readable, the server goes on serving, and once
    space is freed a new recording of the same session works."""
    from pushed_video import PUSHED, noisy_units

    from holo.client.video import VideoClient
    from holo.recording.files import Recording
    from holo.video.frames import PushedUnit

    units = noisy_units(90)  # ~5 MB
    node = ServeProcess(disk / "data", min_free="0")

    async def body() -> str:
        presenter = SessionClient(node.address, token=node.token("presenter"), insecure=True)
        session_id = (await presenter.create_session()).session_id.value
        await presenter.join(session_id)
        video = VideoClient(node.address, token=node.token("presenter"), insecure=True)
        track = await video.open_track(session_id, "headset", "headset_camera", push=PUSHED)
        recording = await video.start_recording(session_id)
        for unit in units[:30]:
            await video.push(track.track_id.value, [unit])
        await asyncio.sleep(0.5)
        filler = fill(disk)
        for unit in units[30:]:
            await video.push(track.track_id.value, [unit])
        await asyncio.sleep(0.5)
        with pytest.raises(ClientError) as stopped:
            await video.stop_recording(session_id)
        message = str(stopped.value)
        assert "DATA_LOSS" in message and "stopped early" in message, message
        assert "disk is full" in message and "'data'" in message, message
        assert "/" not in message.split(":", 1)[1] and "\n" not in message, message
        # Still serving on a full disk; and recording again once there is space.
        assert [t.name for t in await video.tracks(session_id)] == ["headset"]
        filler.unlink()
        wait_health(node, "", SERVING)
        await video.start_recording(session_id)
        for unit in units[:30]:  # the track goes on after where it stopped
            later = PushedUnit(unit.data, unit.pts + len(units), unit.keyframe)
            await video.push(track.track_id.value, [later])
        await asyncio.sleep(0.5)
        await video.stop_recording(session_id)
        await presenter.close()
        await video.close()
        return recording.recording_id.value

    try:
        recording_id = asyncio.run(asyncio.wait_for(body(), 90))
    finally:
        stop_cleanly(node)
    kept = Recording.open(disk / "data" / "recordings" / recording_id)
    frames = list(kept.frames(kept.tracks[0].track_id))
    # The 30 frames pushed before the disk filled, less what the muxer still held in memory
    # then (29 seen: the last frame's write met the full disk).
    assert 20 <= len(frames) < len(units)
    assert [f.pts for f in frames] == [u.pts for u in units[: len(frames)]]
