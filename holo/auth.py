"""Signed access tokens: who is calling, in which case, with which role, until when.

A token is ``holo1.<claims>.<signature>``: the claims are base64url JSON
(``sub``, ``case``, ``role``, ``iat``, ``exp``), the signature is HMAC-SHA256 over
``holo1.<claims>`` with the server's secret. The standard library does this in a few lines,
so no JWT library is needed; the format is deliberately not JWT, so nothing mistakes one for
the other. The secret lives in ``<data>/secret.key`` (32 random bytes, mode 0600), made on
first use by ``holo serve`` or ``holo token``. The server also derives from it the key of
the replacement UIDs in what non-radiologists see (:func:`deid_salt`), so
rotating the secret invalidates every token and changes the replacement UIDs of studies
and models made afterwards (those made before keep theirs).

Nothing here imports grpc: the interceptor (:mod:`holo.server.interceptors`) reads the
``authorization`` metadata and calls :func:`verify_token`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from holo.errors import AuthError, InvalidRequestError

__all__ = [
    "ROLES",
    "Claims",
    "deid_salt",
    "load_secret",
    "mint_token",
    "parse_ttl",
    "verify_token",
]

#: Roles, as ARCHITECTURE.md names them.
ROLES = ("radiologist", "presenter", "expert", "observer")
_PREFIX = "holo1"
_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_SECRET_FILE = "secret.key"
_CLOCK_SKEW_S = 60  # tolerated for ``iat`` in the future (clocks of minting hosts differ)
#: Longest token accepted. Minted ones are about 200 characters (ids are at most 128);
#: anything far longer is not a token, and is refused before it is hashed.
MAX_TOKEN_CHARS = 4096


@dataclass(frozen=True)
class Claims:
    """What a verified token says."""

    subject: str
    case_id: str
    role: str
    issued_at: int
    expires_at: int


def load_secret(
    data_dir: str | os.PathLike[str] | None, *, path: str | os.PathLike[str] | None = None
) -> bytes:
    """The server's token secret, created (0600) on first use: ``<data_dir>/secret.key``,
    or ``path`` when given (nodes that serve the same sessions share one secret file).

    Deleting the file makes a new secret on the next start: every token must then be minted
    again, and the replacement UIDs of studies and models made afterwards change (they are
    keyed by a key derived from the secret), so they no longer match those made before.
    """
    if path is None:
        if data_dir is None:
            raise AuthError("no token secret: give the server's --data folder or --secret file")
        path = Path(data_dir) / _SECRET_FILE
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_bytes()
        if len(secret) < 32:
            raise AuthError(
                f"{path}: the token secret is shorter than 32 bytes; delete it to make a new "
                "one (tokens minted with the old one stop working, and new models get "
                "replacement UIDs that differ from those of older studies)"
            ) from None
        return secret
    secret = secrets.token_bytes(32)
    try:
        os.write(fd, secret)
        os.fsync(fd)
    finally:
        os.close(fd)
    return secret


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest())


def parse_ttl(text: str) -> int:
    """Seconds from ``"90s"``, ``"30m"``, ``"8h"``, ``"2d"`` or a plain number of seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not match or int(match.group(1)) == 0:
        raise InvalidRequestError(
            f"token lifetime {text!r} is not a positive duration; write e.g. 90s, 30m, 8h or 2d"
        )
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def mint_token(
    secret: bytes, *, role: str, case_id: str, subject: str, ttl_s: int, now: float | None = None
) -> str:
    """A signed token for one role in one case, valid for ``ttl_s`` seconds."""
    if role not in ROLES:
        raise InvalidRequestError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    for name, value in (("case", case_id), ("subject", subject)):
        if not _ID.match(value):
            raise InvalidRequestError(
                f"{name} {value!r} is not a valid id: 1 to 128 characters of A-Z a-z 0-9 . _ -"
            )
    if ttl_s <= 0:
        raise InvalidRequestError(f"token lifetime must be positive, got {ttl_s} s")
    issued = int(time.time() if now is None else now)
    claims = {"sub": subject, "case": case_id, "role": role, "iat": issued, "exp": issued + ttl_s}
    payload = f"{_PREFIX}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
    return f"{payload}.{_sign(secret, payload)}"


def verify_token(secret: bytes, token: str, *, now: float | None = None) -> Claims:
    """Check a token's signature, format and lifetime.

    Raises
    ------
    AuthError
        Malformed (including non-ASCII or over :data:`MAX_TOKEN_CHARS`), forged (the
        signature does not match this server's secret) or expired.
    """
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        # Checked first: the signature is compared as ASCII text, and nothing this long
        # or outside ASCII was ever minted.
        raise AuthError(
            "the token is malformed (not ASCII, or over 4096 characters); mint a new one "
            "with `holo token`"
        )
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _PREFIX:
        raise AuthError("the token is malformed; mint a new one with `holo token`")
    payload = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_sign(secret, payload), parts[2]):
        raise AuthError(
            "the token's signature does not match this server's secret; mint one with "
            "`holo token` against this server's --data"
        )
    try:
        raw = json.loads(_unb64(parts[1]))
        claims = Claims(
            subject=str(raw["sub"]),
            case_id=str(raw["case"]),
            role=str(raw["role"]),
            issued_at=int(raw["iat"]),
            expires_at=int(raw["exp"]),
        )
    except (binascii.Error, ValueError, KeyError, TypeError) as err:
        raise AuthError("the token's claims are unreadable; mint a new one") from err
    moment = time.time() if now is None else now
    if claims.expires_at <= moment:
        raise AuthError(
            f"the token expired {int(moment - claims.expires_at)} s ago; mint a new one "
            "with `holo token`"
        )
    if claims.issued_at > moment + _CLOCK_SKEW_S or claims.role not in ROLES:
        raise AuthError("the token's claims are not valid; mint a new one")
    return claims


def deid_salt(secret: bytes) -> str:
    """The key of the replacement UIDs non-radiologists see: derived from the token secret
    (stable across restarts, never sent anywhere) but not the token key itself."""
    return hmac.new(secret, b"holo de-identification v1", hashlib.sha256).hexdigest()
