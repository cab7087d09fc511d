"""A real, throw-away PostgreSQL for the tests: its own data folder, a free loopback port,
a Unix socket in that folder, no fsync (the folder is thrown away).

``with PostgresServer() as url:`` or the ``postgres`` fixture. PostgreSQL refuses to
run as root, so as root (CI) the server runs as the ``postgres`` user Debian's package
creates, on a folder it owns. Without PostgreSQL the test fails in CI (``CI=true``) and
skips, with the reason, elsewhere (the rule of ``redis_server.py``).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import psycopg
import pytest
from engines import free_port, missing

__all__ = ["PostgresServer", "postgres"]

_START_TIMEOUT = 30.0  # seconds for pg_ctl to report the server up
_ATTEMPTS = 3  # a free port can be taken between choosing it and the server binding it


def _bin(name: str) -> str:
    """A PostgreSQL program (Debian keeps them out of PATH, by major version)."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        missing(f"PostgreSQL's {name} not found; install it (apt-get install postgresql, or make)")
    return found


class PostgresServer:
    """PostgreSQL on a free loopback port; ``url`` (database ``holo``) once started."""

    def __init__(self) -> None:
        self.url = ""
        self.port = 0
        self._folder = ""
        self._as: list[str] = []  # the command prefix that runs a program as the server's user

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as, *command], capture_output=True, text=True, timeout=60, check=False
        )

    def __enter__(self) -> str:
        initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
        # Not under pytest's private tmp: the postgres user must reach the folder.
        self._folder = tempfile.mkdtemp(prefix="holo-postgres-")
        data = Path(self._folder) / "data"
        if os.geteuid() == 0:
            shutil.chown(self._folder, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        made = self._run(initdb, "-D", str(data), "-A", "trust", "-U", "holo", "--no-sync")
        if made.returncode != 0:
            self._cleanup()
            raise RuntimeError(f"initdb failed:\n{made.stdout}{made.stderr}")
        for _ in range(_ATTEMPTS):
            self.port = free_port()
            options = (
                f"-p {self.port} -k {self._folder} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c full_page_writes=off"
            )
            started = self._run(
                pg_ctl, "-D", str(data), "-o", options, "-l", f"{self._folder}/log",
                "-w", "-t", str(int(_START_TIMEOUT)), "start",
            )  # fmt: skip
            if started.returncode == 0:
                admin = f"postgresql://holo@127.0.0.1:{self.port}/postgres"
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute("CREATE DATABASE holo")
                self.url = f"postgresql://holo@127.0.0.1:{self.port}/holo"
                return self.url
        log = Path(self._folder, "log").read_text(errors="replace") if self._folder else ""
        self._cleanup()
        raise RuntimeError(f"PostgreSQL did not start after {_ATTEMPTS} tries:\n{log}")

    def database(self) -> str:
        """A new, empty database on this server; its URL."""
        name = f"holo_{uuid.uuid4().hex[:12]}"
        admin = f"postgresql://holo@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://holo@127.0.0.1:{self.port}/{name}"

    def _processes(self) -> list[int]:
        """The server's processes: the postmaster and its children."""
        main = int(Path(self._folder, "data", "postmaster.pid").read_text().split()[0])
        children = Path(f"/proc/{main}/task/{main}/children").read_text().split()
        return [main, *map(int, children)]

    def freeze(self) -> None:
        """SIGSTOP every process of the server: connections stay open and nothing answers
        (a hung server, which a closed port does not show)."""
        for pid in self._processes():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT what :meth:`freeze` stopped."""
        for pid in self._processes():
            os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server now (fast shutdown: open connections are cut)."""
        if self.url:
            self._run(_bin("pg_ctl"), "-D", f"{self._folder}/data", "-m", "fast", "-w", "stop")

    def start(self) -> None:
        """Start it again on the same port, with the same data."""
        options = f"-p {self.port} -k {self._folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            _bin("pg_ctl"), "-D", f"{self._folder}/data", "-o", options,
            "-l", f"{self._folder}/log", "-w", "start",
        )  # fmt: skip

    def _cleanup(self) -> None:
        self.stop()
        if self._folder:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = ""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._cleanup()


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test module's own; ``.database()`` gives each test a
    fresh database, ``.url`` is the module's ``holo`` database."""
    server = PostgresServer()
    server.__enter__()
    try:
        yield server
    finally:
        server.__exit__(None, None, None)
