"""holo.server.memtrace: HOLO_TRACEMALLOC=DIR makes SIGUSR1 write a snapshot and its figures."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tracemalloc
from pathlib import Path

import pytest

from holo.server import memtrace


def test_sigusr1_writes_a_snapshot_with_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        assert memtrace.install(loop) is False  # off unless asked for
        monkeypatch.setenv(memtrace.ENV, str(tmp_path))
        assert memtrace.install(loop) is True
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
            figures = tmp_path / "001.json"
            for _ in range(200):
                if figures.is_file() and "gc_garbage_objects" in figures.read_text():
                    break
                await asyncio.sleep(0.05)
            shown = json.loads(figures.read_text())
            assert shown["rss_mb"] > 0 and shown["traced_mb"] > 0
            assert isinstance(shown["gc_garbage_by_type"], dict)
            snapshot = tracemalloc.Snapshot.load(str(tmp_path / "001.tracemalloc"))
            assert snapshot.traces
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)
            tracemalloc.stop()

    monkeypatch.delenv(memtrace.ENV, raising=False)
    asyncio.run(body())
