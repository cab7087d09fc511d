"""A small gRPC-Web client over HTTP/1.1, written from the protocol's text, for tests and
benchmarks of the web port (``holo serve --web``).

It speaks what HoloLens 2's .NET ``GrpcWebHandler`` speaks: ``POST /pkg.Service/Method``
over HTTP/1.1 with ``content-type: application/grpc-web``, the request as one
length-prefixed message, and a response of length-prefixed messages ending with a trailer
frame (flag 0x80) that carries ``grpc-status`` and ``grpc-message``. Being independent of
the server's library, it checks the wire rather than the library's agreement with itself.
"""

from __future__ import annotations

import http.client
import ssl
import struct
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

__all__ = ["GrpcWebClient", "GrpcWebError", "frame"]

_TRAILERS = 0x80


class GrpcWebError(Exception):
    """A call that ended with a non-OK ``grpc-status``."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


def frame(payload: bytes, flags: int = 0) -> bytes:
    """One gRPC(-Web) frame: flags, 4-byte big-endian length, payload."""
    return struct.pack(">BI", flags, len(payload)) + payload


@dataclass
class Call:
    """What a finished call returned."""

    http_status: int
    headers: dict[str, str]
    messages: list[bytes] = field(default_factory=list)
    trailers: dict[str, str] = field(default_factory=dict)


def _status(trailers: dict[str, str]) -> tuple[grpc.StatusCode, str]:
    number = int(trailers.get("grpc-status", "2"))
    code = next((c for c in grpc.StatusCode if c.value[0] == number), grpc.StatusCode.UNKNOWN)
    return code, urllib.parse.unquote(trailers.get("grpc-message", ""))


class GrpcWebClient:
    """Calls the web port at ``base_url`` (``https://localhost:PORT/``) as ``token``.

    ``ca``: the PEM of the CA that signed the server's certificate (https).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        ca: bytes | None = None,
        timeout: float = 30.0,
    ) -> None:
        url = urllib.parse.urlsplit(base_url)
        self._https = url.scheme == "https"
        self._host = url.hostname or "localhost"
        self._port = url.port or (443 if self._https else 80)
        self._token = token
        self._timeout = timeout
        self._context = None
        if self._https:
            self._context = ssl.create_default_context(cadata=None if ca is None else ca.decode())

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=self._context
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def open(
        self,
        method: str,
        request: Any,
        *,
        content_type: str = "application/grpc-web",
        headers: dict[str, str] | None = None,
    ) -> Iterator[bytes | Call]:
        """Start ``method`` (``/holo.v1.AssetService/GetModel``); yields each reply
        message's bytes as it arrives, then the finished :class:`Call` (its trailers)."""
        body = request if isinstance(request, bytes) else request.SerializeToString()
        sent = {"content-type": content_type, "x-grpc-web": "1", "accept": content_type}
        if self._token is not None:
            sent["authorization"] = f"Bearer {self._token}"
        sent.update(headers or {})
        connection = self._connection()
        try:
            connection.request("POST", method, body=frame(body), headers=sent)
            response = connection.getresponse()
            call = Call(response.status, {k.lower(): v for k, v in response.getheaders()})
            if response.status != 200:
                call.trailers = {"grpc-status": str(_http_code(response.status))}
                response.read()
                yield call
                return
            # Trailers-only replies carry the status in the headers.
            if "grpc-status" in call.headers:
                call.trailers = {k: v for k, v in call.headers.items() if k.startswith("grpc-")}
            while True:
                head = response.read(5)
                if not head:
                    break
                if len(head) < 5:
                    raise ValueError(f"a frame header cut short: {head!r}")
                flags, length = struct.unpack(">BI", head)
                payload = response.read(length)
                if len(payload) < length:
                    raise ValueError(f"a frame cut short: {len(payload)} of {length} bytes")
                if flags & _TRAILERS:
                    for line in payload.decode("ascii").split("\r\n"):
                        if line:
                            key, _, value = line.partition(":")
                            call.trailers[key.strip().lower()] = value.strip()
                else:
                    call.messages.append(payload)
                    yield payload
            yield call
        finally:
            connection.close()

    def call(self, method: str, request: Any, **kwargs: Any) -> Call:
        """The whole call; raises :class:`GrpcWebError` unless its status is OK."""
        for item in self.open(method, request, **kwargs):
            if isinstance(item, Call):
                code, message = _status(item.trailers)
                if code != grpc.StatusCode.OK:
                    raise GrpcWebError(code, message)
                return item
        raise ValueError("the call ended without its status")  # pragma: no cover

    def unary(self, method: str, request: Any, reply_type: Any, **kwargs: Any) -> Any:
        """One reply, parsed as ``reply_type``."""
        call = self.call(method, request, **kwargs)
        if len(call.messages) != 1:
            raise ValueError(f"{method} answered {len(call.messages)} messages, not 1")
        return reply_type.FromString(call.messages[0])

    def stream(self, method: str, request: Any, reply_type: Any, **kwargs: Any) -> Iterator[Any]:
        """Each reply parsed as ``reply_type``, as it arrives; a non-OK end raises."""
        for item in self.open(method, request, **kwargs):
            if isinstance(item, Call):
                code, message = _status(item.trailers)
                if code != grpc.StatusCode.OK:
                    raise GrpcWebError(code, message)
                return
            yield reply_type.FromString(item)


def _http_code(status: int) -> int:
    """gRPC's mapping of an HTTP status without grpc-status (doc/http-grpc-status-mapping)."""
    return {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}.get(status, 2)
