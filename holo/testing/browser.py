"""A real browser for tests and benchmarks: Debian's Chromium driven by playwright-core.

:class:`Browser` starts ``node holo/web/tools/browser.mjs`` (playwright-core from
``holo/web/node_modules``, installed by ``make setup``) and sends it one JSON command a
line. WebGL runs on SwiftShader (no GPU here). A server certificate is trusted by its key
(``--ignore-certificate-errors-spki-list``): the TLS is real, only the test CA is not in
the system's store.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["Browser", "BrowserError", "Page", "spki_hash"]

WEB = Path(__file__).resolve().parent.parent / "web"
DRIVER = WEB / "tools" / "browser.mjs"


class BrowserError(RuntimeError):
    """A driver command failed (its message is the page's or playwright's)."""


def spki_hash(cert_pem: bytes) -> str:
    """base64(sha256(SubjectPublicKeyInfo)) of a certificate: what Chromium's
    ``--ignore-certificate-errors-spki-list`` takes."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


class Browser:
    """One headless Chromium; ``trust``: PEM certificates whose keys it accepts."""

    def __init__(self, *, trust: tuple[bytes, ...] = (), flags: tuple[str, ...] = ()) -> None:
        node = shutil.which("node")
        if node is None or not (WEB / "node_modules" / "playwright-core").is_dir():
            raise BrowserError("node and holo/web/node_modules are needed: run `make setup`")
        self._process = subprocess.Popen(
            [node, str(DRIVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._lock = threading.Lock()
        self._next = 0
        self.stderr: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        extra = list(flags)
        if trust:
            extra.append("--ignore-certificate-errors-spki-list=" + ",".join(map(spki_hash, trust)))
        self.version = self.call("launch", flags=extra)

    def _drain(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self.stderr.append(line)

    def call(self, op: str, timeout: float = 120.0, **args: Any) -> Any:
        with self._lock:
            self._next += 1
            assert self._process.stdin is not None and self._process.stdout is not None
            self._process.stdin.write(json.dumps({"id": self._next, "op": op, **args}) + "\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        if not line:
            raise BrowserError(f"the browser driver exited: {''.join(self.stderr[-20:])}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise BrowserError(f"{op}: {answer['error']}")
        return answer.get("value")  # undefined in JavaScript: no value

    def page(
        self,
        name: str,
        url: str,
        *,
        width: int = 1280,
        height: int = 800,
        context: str = "",
        xr: bool = False,
    ) -> Page:
        """Open ``url`` in a new page (its own browser context unless ``context`` names a
        shared one: pages of one context share storage, as tabs of one person). With
        ``xr``, the page runs on an emulated Quest 3 headset (npm ``iwer``), moved from
        the test through ``window.__xrDevice``."""
        self.call(
            "open", page=name, url=url, width=width, height=height, context=context or name, xr=xr
        )
        return Page(self, name)

    def close(self) -> None:
        with contextlib.suppress(BrowserError, OSError, ValueError):
            self.call("close", timeout=30)
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Page:
    """A page of a :class:`Browser`; JavaScript runs through the DevTools protocol, so the
    page's CSP (no eval) does not stop what a test evaluates."""

    def __init__(self, browser: Browser, name: str) -> None:
        self.browser = browser
        self.name = name

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression (a promise is awaited)."""
        return self.browser.call("eval", page=self.name, expression=expression)

    def call(self, function: str, *args: Any) -> Any:
        """``function`` (JavaScript source of a function) applied to JSON ``args``."""
        rendered = ", ".join(json.dumps(a) for a in args)
        return self.eval(f"({function})({rendered})")

    def wait_for(self, expression: str, timeout: float = 30.0, what: str = "") -> Any:
        """Poll ``expression`` until truthy; its value. On timeout, BrowserError naming
        ``what`` and the page's status line."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(expression)
            if value:
                return value
            shown = self.eval("window.holo?.errors ?? []")
            if shown:  # the page said it failed: no use waiting
                raise BrowserError(f"{self.name}: waiting for {what or expression}: {shown}")
            if time.monotonic() > deadline:
                status = self.eval("document.querySelector('#status')?.textContent ?? ''")
                # What the page loaded and when (ms), and how far it got: for diagnosis.
                timings = self.eval(
                    "JSON.stringify([...performance.getEntriesByType('resource').map(e =>"
                    " [e.name.split('?')[0].split('/').pop(), Math.round(e.startTime),"
                    " Math.round(e.responseEnd)]), ...performance.getEntriesByType('mark')"
                    ".map(e => [e.name, Math.round(e.startTime)])])"
                )
                raise BrowserError(
                    f"{self.name}: {what or expression} not within {timeout} s "
                    f"(status: {status!r}; logs: {self.logs()}; timings: {timings})"
                )
            time.sleep(0.1)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise BrowserError(f"{self.name}: condition not met within {timeout} s")
            time.sleep(0.1)

    def screenshot(self, path: str | Path) -> Path:
        self.browser.call("screenshot", page=self.name, path=str(path))
        return Path(path)

    def mouse(self, action: str, x: float = 0, y: float = 0) -> None:
        self.browser.call("mouse", page=self.name, action=action, x=x, y=y)

    def click(self, selector: str) -> None:
        self.browser.call("click", page=self.name, selector=selector)

    def fill(self, selector: str, text: str) -> None:
        self.browser.call("fill", page=self.name, selector=selector, text=text)

    def press(self, selector: str, key: str) -> None:
        self.browser.call("press", page=self.name, selector=selector, key=key)

    def set_files(self, selector: str, files: list[str]) -> None:
        self.browser.call("setFiles", page=self.name, selector=selector, files=files, timeout=300)

    def goto(self, url: str) -> None:
        self.browser.call("goto", page=self.name, url=url)

    def reload(self) -> None:
        self.browser.call("reload", page=self.name)

    def content(self) -> dict[str, str]:
        """``html`` (the DOM serialised) and ``text`` (what it shows)."""
        result: dict[str, str] = self.browser.call("content", page=self.name)
        return result

    def logs(self) -> dict[str, list[Any]]:
        """Console messages, uncaught errors, failed requests and CSP violations."""
        result: dict[str, list[Any]] = self.browser.call("logs", page=self.name)
        return result

    def problems(self) -> list[str]:
        """Console errors, uncaught errors, failed requests and CSP violations, as lines."""
        logs = self.logs()
        lines = [f"console: {m['text']}" for m in logs["console"] if m["type"] == "error"]
        lines += [f"uncaught: {e}" for e in logs["errors"]]
        lines += [f"request failed: {f}" for f in logs["failed"]]
        lines += [f"CSP: {c}" for c in logs["csp"]]
        return lines

    def traffic_contains(self, *needles: str) -> dict[str, bool]:
        """For each needle: whether it is in any byte the page sent or received."""
        result: dict[str, bool] = self.browser.call("search", page=self.name, needles=list(needles))
        return result

    def requests(self, url_part: str) -> list[dict[str, Any]]:
        """The page's requests whose URL holds ``url_part``: ``url``, ``bytes`` received
        (as encoded on the wire), ``finished``, ``canceled`` (by the page)."""
        result: list[dict[str, Any]] = self.browser.call(
            "requests", page=self.name, urlPart=url_part
        )
        return result

    def close(self) -> None:
        self.browser.call("closePage", page=self.name)
