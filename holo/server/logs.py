"""The server's log lines as JSON (``holo serve --log-format json``), with the call they
were written in.

One JSON object per line: ``time`` (UTC, ISO 8601 with milliseconds), ``level``,
``logger``, ``message``, and inside an RPC its ``request_id`` and the token's ``subject``
(who called); ``exception`` holds a traceback when there is one. The call is known through
a context variable the token check sets (:class:`holo.server.interceptors.AuthInterceptor`
calls :func:`bind_request`), so a line logged anywhere below a servicer (the session core,
a store call in a thread) carries it without being passed anything.

Messages are the same as in text: they name files, methods and ids, never a patient
(names, birth dates and the like stay in the de-identified study summary).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import time
from collections.abc import Iterable

__all__ = ["JsonFormatter", "bind_request", "current_request", "request_id", "use_json"]

#: (request id, token subject) of the call being served; None outside any call.
_request: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "holo_request", default=None
)
#: A request id a proxy or client sent (``x-request-id``) is kept when it looks like one:
#: short, and nothing a log reader could mistake for structure.
_GIVEN_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The call's ``x-request-id`` if it sent a sane one (Envoy and most proxies set it),
    else a new random one."""
    for key, value in metadata or ():
        if key == "x-request-id":
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
            if _GIVEN_ID.fullmatch(text):
                return text
    return secrets.token_hex(8)


def bind_request(request: str, subject: str) -> None:
    """The lines logged from now on in this call carry ``request`` and ``subject``."""
    _request.set((request, subject))


def current_request() -> tuple[str, str] | None:
    """(request id, subject) of the call being served, or None."""
    return _request.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        line: dict[str, object] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        call = _request.get()
        if call is not None:
            line["request_id"], line["subject"] = call
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


def use_json(logger: logging.Logger | None = None) -> None:
    """Format every handler of ``logger`` (default the root logger) as JSON lines; one on
    stderr is added if it has none."""
    target = logger or logging.getLogger()
    if not target.handlers:
        target.addHandler(logging.StreamHandler())
    for handler in target.handlers:
        handler.setFormatter(JsonFormatter())
