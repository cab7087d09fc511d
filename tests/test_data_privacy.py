"""The data folder holds patient identity at rest (the database, the audit log, uploads,
blobs, recordings): nothing in it may be readable by another local account."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

import pytest

from holo.client.session import SessionClient
from holo.client.video import VideoClient
from holo.store import Store
from holo.testing import ServeProcess

CASE = "case-1"
MEDIA = Path(__file__).resolve().parent.parent / "sample_data" / "video"


def open_entries(folder: Path) -> list[str]:
    """Everything under ``folder`` (itself included) that group or others may use."""
    found = []
    for entry in [folder, *folder.rglob("*")]:
        mode = entry.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & (stat.S_IRWXG | stat.S_IRWXO):
            found.append(f"{entry.relative_to(folder.parent)} {stat.filemode(mode)}")
    return found


def test_holo_serve_keeps_everything_it_writes_private(tmp_path: Path, sample_ct: Path) -> None:
    """A fresh data folder after an upload, a study, a session and a recording of a video
    track: every file and folder in it is its user's only, while it runs and after."""
    data = tmp_path / "data"
    node = ServeProcess(data, media=MEDIA)
    try:
        with node.client("radiologist") as radiologist:
            radiologist.upload_study([sample_ct])

        async def session() -> None:
            presenter = SessionClient(node.address, token=node.token("presenter"), insecure=True)
            info = await presenter.create_session()
            session_id = info.session_id.value
            await presenter.join(session_id)
            video = VideoClient(node.address, token=node.token("presenter"), insecure=True)
            recording = await video.start_recording(session_id)
            track = await video.open_track(session_id, "scope", "endoscope", file="operative.mp4")
            await asyncio.sleep(1.0)
            await video.stop_recording(session_id)
            await video.close_track(track.track_id.value)
            await video.close()
            await presenter.close()
            assert any((data / "recordings" / recording.recording_id.value).rglob("*.mkv"))

        asyncio.run(asyncio.wait_for(session(), 120))
        names = {p.name for p in data.iterdir()}
        assert {"holo.sqlite3", "holo.sqlite3-wal", "audit.jsonl", "recordings"} <= names
        assert open_entries(data) == []
    finally:
        assert node.stop() == 0
    assert open_entries(data) == []


def test_a_store_creates_only_private_files_whatever_the_umask(tmp_path: Path) -> None:
    """The store sets its own modes (an embedding process keeps its umask of 022)."""
    previous = os.umask(0o022)
    try:
        with Store(tmp_path / "store") as store:
            upload = store.start_upload(
                case_id=CASE,
                name="IM0001",
                size_bytes=3,
                sha256="ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                subject="tester",
            )
            store.append_chunk(upload.upload_id, 0, b"abc")
            store.put_blob(b"a model")
            assert open_entries(tmp_path / "store") == []
    finally:
        os.umask(previous)


def test_loose_modes_are_tightened_on_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A data folder from an older holo (755 folders, 644 database and audit log) is made
    private when the store opens, with one log line that names no path."""
    root = tmp_path / "old-data"
    with Store(root):
        pass
    (root / "audit.jsonl").write_text('{"action":"joined"}\n')
    for entry, mode in (
        (root, 0o755),
        (root / "blobs", 0o755),
        (root / "holo.sqlite3", 0o644),
        (root / "audit.jsonl", 0o644),
    ):
        entry.chmod(mode)
    with caplog.at_level(logging.WARNING, logger="holo.store"), Store(root):
        assert open_entries(root) == []
    lines = [r.getMessage() for r in caplog.records if "private" in r.getMessage()]
    assert lines == [
        "data folder 'old-data': made 4 file(s) and folder(s) private to this user (other "
        "local accounts could read them)"
    ]
    assert stat.S_IMODE((root / "holo.sqlite3").stat().st_mode) == 0o600
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
