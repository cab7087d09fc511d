"""Uploads, study indexing and conversion workers under load, restarts and crafted input:
heavy work apart from every caller's store calls, fair between callers; uploads that
survive a restart; workers that die with their server; no upload names in logs and no
server paths in messages; zips bounded before they are expanded."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from holo.testing import ServeProcess


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
