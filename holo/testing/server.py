"""A real holo server in-process, for tests, benchmarks and the headset simulator.

:class:`TestServer` runs :func:`holo.server.start_server` on its own event loop in a
background thread, bound to a free loopback port (port 0), plain text or TLS, and mints
tokens from its secret. It is the real server (interceptors, store, job processes), not a
stand-in; only the process boundary differs from ``holo serve``.
:func:`start_test_server` makes one and starts it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from holo.auth import load_secret, mint_token
from holo.client import HoloClient
from holo.server import RunningServer, ServerConfig, start_server
from holo.server.ratelimit import RateLimits
from holo.session import HubConfig
from holo.store.publish import publish_model

__all__ = ["ServeProcess", "TestServer", "start_test_server"]


class TestServer:
    """Start with ``with TestServer(tmp_path) as server:``; ``server.address`` to connect.

    Parameters
    ----------
    data
        The store folder (``holo serve --data``).
    web
        Also start the web port (``holo serve --web``) on a free loopback port;
        ``web_origins`` and ``web_root`` as ``--web-origin`` and the built page's folder.
    tls
        ``(cert_pem_path, key_pem_path)`` to serve TLS (the certificate must name
        ``localhost``); None serves plain text on 127.0.0.1.
    client_ca
        PEM of a CA: mutual TLS, clients must present a certificate it signed.
    dicom_allow
        Calling AE titles: also start the DICOM port (``holo serve --dicom-listen``) on a
        free loopback port (:attr:`dicom_port`) accepting them; ``dicom_ae_title``,
        ``dicom_case``, ``dicom_convert`` and ``dicom_quiet_s`` as ``--ae-title``,
        ``--dicom-case``, ``--dicom-convert`` and ``--dicom-quiet``.
    metrics
        Also serve Prometheus metrics (``holo serve --metrics``) on a free loopback port
        (:attr:`metrics_port`).
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        data: str | Path,
        *,
        tls: tuple[Path, Path] | None = None,
        workers: int = 1,
        max_upload_bytes: int = 8 << 30,
        model_chunk_bytes: int = 1 << 20,
        client_ca: bytes | None = None,
        bus: str = "memory",
        session: HubConfig | None = None,
        rate_limits: RateLimits | None = None,
        media: Path | None = None,
        web: bool = False,
        web_origins: tuple[str, ...] = (),
        web_root: Path | None = None,
        dicom_allow: tuple[str, ...] = (),
        dicom_ae_title: str = "HOLO",
        dicom_case: str = "inbox",
        dicom_convert: tuple[str, ...] = (),
        dicom_quiet_s: float = 10.0,
        metrics: bool = False,
    ) -> None:
        self.data = Path(data)
        if client_ca is not None:  # mutual TLS: the server reads the CA from a file
            self.data.mkdir(parents=True, exist_ok=True)
            (self.data / "client-ca.pem").write_bytes(client_ca)
        self.tls = tls
        self.config = ServerConfig(
            data=self.data,
            listen="127.0.0.1:0",
            tls_cert=tls[0] if tls else None,
            tls_key=tls[1] if tls else None,
            tls_client_ca=None if client_ca is None else self.data / "client-ca.pem",
            insecure=tls is None,
            workers=workers,
            max_upload_bytes=max_upload_bytes,
            model_chunk_bytes=model_chunk_bytes,
            bus=bus,
            session=session or HubConfig(),
            rate_limits=rate_limits or RateLimits(),
            media=media,
            grace_s=1.0,
            web="127.0.0.1:0" if web else None,
            web_origins=web_origins,
            web_root=web_root,
            dicom_listen="127.0.0.1:0" if dicom_allow else None,
            dicom_ae_title=dicom_ae_title,
            dicom_allow=dicom_allow,
            dicom_case=dicom_case,
            dicom_convert=dicom_convert,
            dicom_quiet_s=dicom_quiet_s,
            metrics="127.0.0.1:0" if metrics else None,
        )
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="holo-test-server", daemon=True
        )
        self.running: RunningServer | None = None

    def start(self) -> TestServer:
        self._thread.start()
        self.running = asyncio.run_coroutine_threadsafe(
            start_server(self.config), self.loop
        ).result(60)
        return self

    @property
    def port(self) -> int:
        assert self.running is not None, "start() the server first"
        return self.running.port

    @property
    def web_port(self) -> int:
        assert self.running is not None, "start() the server first"
        return self.running.web_port

    @property
    def dicom_port(self) -> int:
        """The DICOM port (with ``dicom_allow``; else 0)."""
        assert self.running is not None, "start() the server first"
        return self.running.dicom_port

    @property
    def metrics_port(self) -> int:
        """The metrics endpoint's port (with ``metrics``; else 0)."""
        assert self.running is not None, "start() the server first"
        return self.running.metrics_port

    @property
    def web_url(self) -> str:
        """The web port's base URL, ending in ``/`` (https with TLS, by ``localhost``)."""
        if self.tls:
            return f"https://localhost:{self.web_port}/"
        return f"http://127.0.0.1:{self.web_port}/"

    @property
    def address(self) -> str:
        # TLS: the test certificate names localhost, so connect by that name.
        return f"{'localhost' if self.tls else '127.0.0.1'}:{self.port}"

    def token(
        self, role: str, case_id: str = "case-1", *, subject: str = "tester", ttl_s: int = 3600
    ) -> str:
        return mint_token(
            load_secret(self.data), role=role, case_id=case_id, subject=subject, ttl_s=ttl_s
        )

    def client(
        self, role: str, case_id: str = "case-1", *, ca: bytes | None = None, **kwargs: Any
    ) -> HoloClient:
        """A client with a fresh token; TLS with ``ca`` when the server serves TLS."""
        return HoloClient(
            self.address,
            token=self.token(role, case_id),
            ca=ca,
            insecure=self.tls is None,
            **kwargs,
        )

    def publish_model(self, case_id: str, glb: str | Path, *, subject: str = "tester") -> str:
        """Record a GLB as a model of ``case_id`` the way a finished conversion job does
        (a placeholder study, a succeeded job); returns the model id. For tests and
        benchmarks that need models in many cases without converting each time."""
        assert self.running is not None, "start() the server first"
        store = self.running.store
        placeholder = f"placeholder study of {case_id}\n".encode()
        upload = store.start_upload(
            case_id=case_id,
            name="placeholder.dcm",
            size_bytes=len(placeholder),
            sha256=hashlib.sha256(placeholder).hexdigest(),
            subject=subject,
        )
        if not upload.complete:  # complete at once only if the case holds it already
            store.append_chunk(upload.upload_id, 0, placeholder)
        # A summary of no series, so the study lists like any other (ListStudies).
        summary = {
            "series": [],
            "public_series": [],
            "identity": {"PatientName": "", "PatientID": "", "StudyDescription": ""},
        }
        study = store.create_study(case_id=case_id, upload_ids=[upload.upload_id], summary=summary)
        job = store.create_job(study_id=study.study_id, case_id=case_id, preset="bone")
        model = publish_model(
            store,
            Path(glb).read_bytes(),
            case_id=case_id,
            study_id=study.study_id,
            job_id=job.job_id,
            preset="bone",
        )
        return model.model_id

    def call(self, coroutine: Any, timeout: float = 60) -> Any:
        """Run a coroutine on the server's loop (to reach its store or job runner)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        if self.running is not None:
            self.call(self.running.stop(0.5))
            self.running = None
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)

    def __enter__(self) -> TestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_test_server(data: str | Path, **kwargs: Any) -> TestServer:
    """A started :class:`TestServer` on ``data`` (keyword arguments as for the class);
    call ``stop()`` when done, or use it in a ``with`` block."""
    return TestServer(data, **kwargs).start()


#: Runs a command with no file allowed to grow past argv[1] bytes: writes past it fail
#: (EFBIG) instead of killing the process (SIGXFSZ ignored; both survive the exec). A
#: fresh interpreter does it, not ``preexec_fn``: forking a process that has gRPC threads
#: and running Python in the child before exec can deadlock (the subprocess docs say so).
_LIMIT_FILES = (
    "import os, resource, signal, sys; "
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


class ServeProcess:
    """``holo serve --insecure`` as a separate process on a free loopback port: for tests
    that kill it (-9) or stop it (SIGTERM), and for benchmarks that measure it from outside.

    Parameters
    ----------
    data
        Its ``--data``.
    bus, secret
        ``--bus`` and ``--secret`` (several nodes of one session share both).
    media
        ``--media``: the video files presenters may play into a session.
    cwd
        The working folder it runs in (``data``, ``secret`` and ``media`` may be relative
        to it, as a user would type them).
    max_file_bytes
        No file the server writes may grow beyond this (RLIMIT_FSIZE): a full disk, for
        real, without filling one (writes past it fail with EFBIG).
    min_free
        ``--min-free``: the free space new uploads must leave.
    port
        The loopback port to listen on (0: any free one); a restarted server that clients
        find where it was needs the same port.
    verbose
        ``holo -v serve``: the server logs at INFO.
    options
        More ``holo serve`` options (``--web 127.0.0.1:0``: also the web port, at
        :attr:`web_url`).
    """

    def __init__(
        self,
        data: str | Path,
        *,
        bus: str = "memory",
        secret: str | Path | None = None,
        media: str | Path | None = None,
        cwd: str | Path | None = None,
        max_file_bytes: int | None = None,
        min_free: str | None = None,
        port: int = 0,
        verbose: bool = False,
        options: tuple[str, ...] = (),
    ) -> None:
        self.data = Path(cwd or ".") / data
        self.secret = None if secret is None else Path(cwd or ".") / secret
        command = [sys.executable, "-m", "holo.cli", *(["-v"] if verbose else [])]
        command += ["serve", "--data", str(data), *options]
        command += ["--listen", f"127.0.0.1:{port}", "--insecure", "--bus", bus]
        command += [] if secret is None else ["--secret", str(secret)]
        command += [] if media is None else ["--media", str(media)]
        command += [] if min_free is None else ["--min-free", min_free]
        if max_file_bytes is not None:
            command = [sys.executable, "-c", _LIMIT_FILES, str(max_file_bytes), *command]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=cwd)
        self.lines: list[str] = []
        self.port = 0
        self.web_url = ""  # with --web in options: the web port's base URL
        ready = threading.Event()
        wants_web = "--web" in options

        def drain() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self.lines.append(line)
                found = re.search(r"serving on 127\.0\.0\.1:(\d+)", line)
                if found:
                    self.port = int(found.group(1))
                web = re.search(r"gRPC-Web on (https?://\S+/)", line)
                if web:
                    self.web_url = web.group(1)
                if self.port and (self.web_url or not wants_web):
                    ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(60):
            self.process.kill()
            raise RuntimeError(f"holo serve did not start: {''.join(self.lines)}")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def token(self, role: str, case_id: str = "case-1", *, subject: str = "tester") -> str:
        secret = load_secret(self.data, path=self.secret)
        return mint_token(secret, role=role, case_id=case_id, subject=subject, ttl_s=3600)

    def client(self, role: str, case_id: str = "case-1", **kwargs: Any) -> HoloClient:
        return HoloClient(self.address, token=self.token(role, case_id), insecure=True, **kwargs)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up (what a crash or power cut does)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (a graceful stop); the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)
