"""A real, throw-away ``redis-server`` for the tests: loopback only, saving nothing unless asked.

``with RedisServer() as url:`` or the ``redis_url`` fixture (``from redis_server import
redis_url``). ``RedisServer(persist=True)`` keeps an append-only file fsynced on every write,
so :meth:`RedisServer.stop` and :meth:`RedisServer.start` restart it with its data, on the
same port (a Redis restarted under running holo nodes). Without ``redis-server`` the test
fails in CI (``CI=true``) and skips, with the reason, elsewhere (the same rule as
``shared_data`` in ``conftest.py``).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest
import redis
from engines import free_port, missing
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["RedisServer", "find_redis_server", "redis_url"]

_START_TIMEOUT = 10.0  # seconds for redis-server to answer PING
_ATTEMPTS = 3  # a free port can be taken between choosing it and redis binding it


def find_redis_server() -> str:
    """The ``redis-server`` executable; fail in CI, skip elsewhere when there is none."""
    executable = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin")
    if executable is None:
        missing("redis-server not found; install it (apt-get install redis-server, or make)")
    return executable


class RedisServer:
    """``redis-server`` on a free loopback port in a temporary folder; ``url`` once started."""

    def __init__(self, *, persist: bool = False, port: int = 0) -> None:
        self.url = ""
        self.port = port
        self.persist = persist
        self._process: subprocess.Popen[bytes] | None = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> str:
        executable = find_redis_server()
        self._folder = tempfile.TemporaryDirectory(prefix="holo-redis-")
        folder = Path(self._folder.name)
        chosen = self.port
        for _ in range(_ATTEMPTS):
            self.port = chosen or free_port()
            if self._launch(executable, folder):
                self.url = f"redis://127.0.0.1:{self.port}/0"
                return self.url
            self._stop()
        log_text = (folder / "redis.log").read_text(errors="replace")
        self._cleanup()
        raise RuntimeError(f"redis-server did not start after {_ATTEMPTS} tries:\n{log_text}")

    def _launch(self, executable: str, folder: Path) -> bool:
        persist = ("--appendonly", "yes", "--appendfsync", "always")
        with (folder / "redis.log").open("ab") as log:
            self._process = subprocess.Popen(
                [
                    *(executable, "--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--dir", str(folder)),
                    *(persist if self.persist else ("--appendonly", "no")),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self._wait_ready()

    def stop(self) -> None:
        """SIGTERM, as an operator's restart does; the data stays (with ``persist``)."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None

    def kill(self) -> None:
        """SIGKILL: an outage; what was not saved is gone (everything, without ``persist``)."""
        self._stop()

    def start(self) -> None:
        """Start it again on its port and folder (after :meth:`stop` or :meth:`kill`)."""
        assert self._folder is not None and self._process is None, "stop() it first"
        if not self._launch(find_redis_server(), Path(self._folder.name)):
            raise RuntimeError(f"redis-server did not start again on port {self.port}")

    def _wait_ready(self) -> bool:
        assert self._process is not None
        client = redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        deadline = time.monotonic() + _START_TIMEOUT
        try:
            while time.monotonic() < deadline and self._process.poll() is None:
                try:
                    if client.ping():
                        return True
                except redis.exceptions.ConnectionError:
                    time.sleep(0.02)
            return False
        finally:
            client.close()

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None

    def _cleanup(self) -> None:
        self._stop()
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._cleanup()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """The URL of a fresh ``redis-server``, one per test module (isolate tests by prefix)."""
    with RedisServer() as url:
        yield url
