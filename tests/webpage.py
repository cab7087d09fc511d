"""What the browser tests share: a server with the web port over TLS (a test CA), the
sample knee uploaded and converted through it, a Python presenter holding the session,
Debian's Chromium driven by playwright-core, and the Python participants' event loop.

tests/conftest.py loads this module as a plugin (``pytest_plugins``), so every test module
can ask for these fixtures by name; the helpers (``Loop``, ``link``, ...) are imported.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tls import TestPKI, make_pki

from holo.client.session import SessionClient
from holo.session.records import Pose
from holo.testing import TestServer
from holo.testing.browser import Browser, Page

T = TypeVar("T")

HOME = Pose((0.0, 1.2, 0.0), (0.0, 0.0, 0.0, 1.0))
MEDIA = Path(__file__).resolve().parent.parent / "sample_data" / "video"


class Loop:
    """An asyncio loop in a thread, for the Python participants beside the page."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        # Tasks still running (a client's stream reader) end first, cancelled and awaited:
        # a loop stopped under them leaves coroutines that warn when collected.
        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(drain(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    running = Loop()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: TestPKI) -> Iterator[TestServer]:
    with TestServer(
        tmp_path_factory.mktemp("store"), tls=(pki.cert, pki.key), web=True, media=MEDIA
    ) as s:
        yield s


@pytest.fixture(scope="module")
def knee_model(server: TestServer, pki: TestPKI, sample_ct: Path) -> str:
    """The sample knee, uploaded with its identity and converted by the server."""
    with server.client("radiologist", ca=pki.ca_pem) as radiologist:
        study = radiologist.upload_study([sample_ct])
        job = radiologist.start_conversion(study.study_id.value)
        done = radiologist.wait_job(job.job_id.value)
        assert done.model_id.value, done
        return done.model_id.value


@pytest.fixture(scope="module")
def presenter(server: TestServer, pki: TestPKI, loop: Loop, knee_model: str) -> Iterator[Any]:
    client = SessionClient(
        server.address, token=server.token("presenter"), ca=pki.ca_pem, display_name="Dr Presenter"
    )

    async def start() -> None:
        info = await client.create_session()
        await client.join(info.session_id.value)
        await client.load_model(knee_model, HOME)

    loop.run(start())
    yield client
    loop.run(client.close())


WEB = Path(__file__).resolve().parent.parent / "holo" / "web"


@pytest.fixture(scope="module")
def browser(pki: TestPKI) -> Iterator[Browser]:
    built = WEB / "dist" / "app.js"
    sources = [*WEB.glob("src/**/*.*"), WEB / "build.mjs"]
    stale = [p for p in sources if not built.exists() or p.stat().st_mtime > built.stat().st_mtime]
    assert not stale, f"the page is older than {stale[0]}: run `make web` (or `make setup`)"
    with Browser(trust=(pki.cert.read_bytes(),)) as running:
        yield running


def link(server: TestServer, role: str, subject: str) -> str:
    return f"{server.web_url}#token={server.token(role, subject=subject)}"


def open_page(browser: Browser, server: TestServer, role: str, name: str) -> Page:
    page = browser.page(name, link(server, role, name))
    page.wait_for("window.holo?.conn?.accepted", 30, f"{name} joined")
    return page


def wait_full_model(page: Page, model_id: str) -> None:
    page.wait_for(f"window.holo.modelsShown.get({model_id!r}) === 2", 60, "the finest LOD shown")
    page.wait_for("!window.holo.viewer.pending", 5)
    time.sleep(0.3)  # the frame after the last change is on screen
