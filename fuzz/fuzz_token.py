"""Fuzz token parsing and verification: ``verify_token`` and ``token_id``.

Documented errors: :class:`~holo.errors.AuthError` from ``verify_token`` (malformed,
forged, expired, ...), :class:`~holo.errors.InvalidRequestError` from ``token_id``.

An input's first byte chooses what the rest is: even, the token text itself (almost
always refused at the signature); odd, the claims JSON, which the harness signs with the
harness's secret, so the code after the signature check (claims parsing, lifetime,
revocation) is reached as it would be with a token minted by a faulty or older minter.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["holo"]):
    from holo.auth import mint_token, token_id, verify_token
    from holo.errors import AuthError, InvalidRequestError

from common import fuzz

SECRET = b"fuzz-secret-of-32-bytes-exactly!"
NOW = 1_750_000_000.0
REVOKED = frozenset({"revoked-id"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _signed(claims: bytes) -> str:
    payload = f"holo1.{_b64(claims)}"
    signature = hmac.new(SECRET, payload.encode("ascii"), hashlib.sha256).digest()
    return f"{payload}.{_b64(signature)}"


def _token(data: bytes) -> str:
    if data and data[0] & 1:
        return _signed(data[1:])
    return data[1:].decode("utf-8", "replace")


def test_one_input(data: bytes) -> None:
    token = _token(data)
    with contextlib.suppress(AuthError):
        verify_token(SECRET, token, now=NOW, revoked=REVOKED)
    with contextlib.suppress(InvalidRequestError):
        token_id(token)


def write_seeds(folder: Path) -> None:
    for role in ("radiologist", "presenter", "expert", "observer"):
        token = mint_token(
            SECRET, role=role, case_id="case-1", subject="tester", ttl_s=3600, now=NOW - 10
        )
        (folder / f"{role}.token").write_bytes(b"\0" + token.encode())
    claims = {
        "sub": "tester",
        "case": "case-1",
        "role": "presenter",
        "iat": int(NOW) - 10,
        "exp": int(NOW) + 3600,
        "jti": "abcdefghijklmnop",
    }
    (folder / "claims.json").write_bytes(b"\1" + json.dumps(claims).encode())
    (folder / "revoked.json").write_bytes(
        b"\1" + json.dumps({**claims, "jti": "revoked-id"}).encode()
    )
    (folder / "no_jti.json").write_bytes(b"\1" + json.dumps({**claims, "jti": ""}).encode())
    (folder / "too_long.json").write_bytes(
        b"\1" + json.dumps({**claims, "exp": int(NOW) + 10**6}).encode()
    )
    (folder / "garbage.token").write_bytes(b"\0holo1.e30.AAAA")


if __name__ == "__main__":
    fuzz(test_one_input, write_seeds)
