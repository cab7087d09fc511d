"""The web page's files and the headers every answer of the web port carries.

The page is built by ``make setup`` into ``holo/web/dist`` (:func:`default_web_root`); each
file is also there Brotli- and gzip-compressed, and a browser that accepts one gets it.
Every answer of the port, the RPCs' too, carries a strict Content-Security-Policy and the
other headers a page holding patient images needs (no sniffing, no referrer, no framing,
HSTS under TLS).
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_SECURITY_POLICY", "SecurityHeaders", "default_web_root", "page_app"]

#: What the page may load: its own files only. 'wasm-unsafe-eval' lets the Draco and meshopt
#: decoders (WebAssembly, served from this port) compile; blob: workers are how three.js
#: runs the Draco decoder off the main thread, and blob: fetches how it reads a GLB's
#: embedded images (an X-ray panel's picture). No inline script, no other origin.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "worker-src 'self' blob:",
        "connect-src 'self' blob:",
        "img-src 'self' data: blob:",
        "style-src 'self'",
        "font-src 'self'",
        "media-src 'self' blob:",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)


def default_web_root() -> Path:
    """Where ``make setup`` builds the web client (holo/web/dist)."""
    return Path(__file__).resolve().parent.parent / "web" / "dist"


@dataclass
class SecurityHeaders:
    """Adds the security headers to every response of ``app``."""

    app: ASGIApp
    tls: bool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers += [
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
                ]
                if self.tls:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


@dataclass
class _Files:
    """The built page's files; a missing one is a plain 404 (StaticFiles raises it).

    ``make setup`` writes each file also Brotli- and gzip-compressed (``app.js.br``); a
    browser that accepts one gets it, with the original's content type."""

    files: StaticFiles
    root: Path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] + ("index.html" if scope["path"].endswith("/") else "")
        accepted = dict(scope.get("headers", ())).get(b"accept-encoding", b"").decode()
        for encoding, suffix in (("br", ".br"), ("gzip", ".gz")):
            packed = self.root / (path.lstrip("/") + suffix)
            if encoding in accepted and ".." not in path and packed.is_file():
                kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
                scope = {**scope, "path": path + suffix}
                send = _encoded(send, encoding, kind)
                break
        try:
            await self.files(scope, receive, send)
        except HTTPException as err:
            await send(
                {
                    "type": "http.response.start",
                    "status": err.status_code,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": f"{err.detail}\n".encode()})


def _encoded(send: Send, encoding: str, kind: str) -> Send:
    """``send`` with the headers of a compressed copy of a file of type ``kind``."""

    async def with_encoding(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", ()) if k != b"content-type"]
            if kind.startswith("text/") or kind in ("application/javascript", "image/svg+xml"):
                kind_header = f"{kind}; charset=utf-8"
            else:
                kind_header = kind
            headers += [
                (b"content-type", kind_header.encode()),
                (b"content-encoding", encoding.encode()),
                (b"vary", b"accept-encoding"),
            ]
            message = {**message, "headers": headers}
        await send(message)

    return with_encoding


class _NotBuilt:
    """What the port answers for the page when the web client was not built."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b"the web client is not built: run `make setup` in holo's folder\n"
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def page_app(root: Path | None) -> ASGIApp:
    """The page's files under ``root``, or a one-line 503 when it was not built."""
    if root is not None and (root / "index.html").is_file():
        return _Files(StaticFiles(directory=root, html=True), root)
    return _NotBuilt()
