"""Signed access tokens: who is calling, in which case, with which role, until when.

A token is ``holo1.<claims>.<signature>``: the claims are base64url JSON
(``sub``, ``case``, ``role``, ``iat``, ``exp``, ``jti``), the signature is HMAC-SHA256 over
``holo1.<claims>`` with the server's secret. The standard library does this in a few lines,
so no JWT library is needed; the format is deliberately not JWT, so nothing mistakes one for
the other. The secret lives in ``<data>/secret.key`` (32 random bytes, mode 0600), made on
first use by ``holo serve`` or ``holo token``.

A token lives at most :data:`MAX_TOKEN_TTL_S` (24 h; ``holo token --max-token-lifetime``
and ``holo serve --max-token-lifetime`` change it) and carries an id (``jti``), so one
token can be revoked without rotating the secret: ``holo token --revoke`` appends its id
to the revocation list next to the secret (:class:`RevocationList`, ``revoked-tokens``),
which the server reads again whenever the file changes, without a restart.

The key of the replacement UIDs in what non-radiologists see is a key of its own,
``deid.key`` next to the secret (:func:`load_deid_salt`), so rotating the token secret no longer
changes the replacement UIDs of studies and models made afterwards. A data folder made by
an older holo, which keyed them by a key derived from the secret (:func:`deid_salt`),
keeps that derived key: it is written to ``deid.key`` on the first start.

Nothing here imports grpc: the interceptor (:mod:`holo.server.interceptors`) reads the
``authorization`` metadata and calls :func:`verify_token`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

from holo.errors import AuthError, InvalidRequestError

__all__ = [
    "MAX_TOKEN_TTL_S",
    "ROLES",
    "Claims",
    "RevocationList",
    "deid_salt",
    "load_deid_salt",
    "load_secret",
    "mint_token",
    "parse_ttl",
    "revocation_path",
    "revoke_token",
    "token_id",
    "verify_token",
]

logger = logging.getLogger(__name__)

#: Roles, as ARCHITECTURE.md names them.
ROLES = ("radiologist", "presenter", "expert", "observer")
_PREFIX = "holo1"
_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_SECRET_FILE = "secret.key"
_JTI = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CLOCK_SKEW_S = 60  # tolerated for ``iat`` in the future (clocks of minting hosts differ)
#: Longest token accepted. Minted ones are about 200 characters (ids are at most 128);
#: anything far longer is not a token, and is refused before it is hashed.
MAX_TOKEN_CHARS = 4096
#: Longest lifetime a token may have, in seconds: one day, a procedure day's shift. A
#: token that leaks is good for at most this long even if no one revokes it; longer-lived
#: ones are refused when minted and by the server (both settings change it).
MAX_TOKEN_TTL_S = 24 * 3600
_DEID_FILE = "deid.key"
_REVOKED_FILE = "revoked-tokens"


@dataclass(frozen=True)
class Claims:
    """What a verified token says."""

    subject: str
    case_id: str
    role: str
    issued_at: int
    expires_at: int
    token_id: str


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


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def mint_token(
    secret: bytes,
    *,
    role: str,
    case_id: str,
    subject: str,
    ttl_s: int,
    now: float | None = None,
    max_ttl_s: int = MAX_TOKEN_TTL_S,
) -> str:
    """A signed token for one role in one case, valid for ``ttl_s`` seconds (at most
    ``max_ttl_s``), with a random id of its own (``jti``, see :func:`token_id`)."""
    if role not in ROLES:
        raise InvalidRequestError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    for name, value in (("case", case_id), ("subject", subject)):
        if not _ID.match(value):
            raise InvalidRequestError(
                f"{name} {value!r} is not a valid id: 1 to 128 characters of A-Z a-z 0-9 . _ -"
            )
    if ttl_s <= 0:
        raise InvalidRequestError(f"token lifetime must be positive, got {ttl_s} s")
    if ttl_s > max_ttl_s:
        raise InvalidRequestError(
            f"token lifetime {_duration(ttl_s)} is over the maximum of {_duration(max_ttl_s)}; "
            "pass a shorter --ttl (or raise --max-token-lifetime here and on `holo serve`)"
        )
    issued = int(time.time() if now is None else now)
    claims = {
        "sub": subject,
        "case": case_id,
        "role": role,
        "iat": issued,
        "exp": issued + ttl_s,
        # 96 random bits: ids never collide, so revoking one revokes only that token.
        "jti": secrets.token_urlsafe(12),
    }
    payload = f"{_PREFIX}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
    return f"{payload}.{_sign(secret, payload)}"


def verify_token(
    secret: bytes,
    token: str,
    *,
    now: float | None = None,
    max_ttl_s: int = MAX_TOKEN_TTL_S,
    revoked: Container[str] = (),
) -> Claims:
    """Check a token's signature, format, lifetime and revocation.

    Raises
    ------
    AuthError
        Malformed (including non-ASCII or over :data:`MAX_TOKEN_CHARS`), forged (the
        signature does not match this server's secret), expired, made to live longer than
        ``max_ttl_s``, without an id (minted by a holo before ids), or its id is in
        ``revoked``.
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
            token_id=str(raw.get("jti", "")),
        )
    except (
        binascii.Error,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        OverflowError,  # "iat": 1e999 is a float infinity, which int() refuses
        RecursionError,  # JSON nested ~1,000 deep (a 4096-character token holds 3,000)
    ) as err:
        raise AuthError("the token's claims are unreadable; mint a new one") from err
    moment = time.time() if now is None else now
    if claims.expires_at <= moment:
        raise AuthError(
            f"the token expired {int(moment - claims.expires_at)} s ago; mint a new one "
            "with `holo token`"
        )
    if claims.issued_at > moment + _CLOCK_SKEW_S or claims.role not in ROLES:
        raise AuthError("the token's claims are not valid; mint a new one")
    if claims.expires_at - claims.issued_at > max_ttl_s:
        raise AuthError(
            f"the token was minted to live {_duration(claims.expires_at - claims.issued_at)}, "
            f"over this server's maximum of {_duration(max_ttl_s)}; mint a shorter one with "
            "`holo token --ttl`"
        )
    if not claims.token_id:
        raise AuthError(
            "the token has no id (it was minted by an older holo, and could not be revoked); "
            "mint a new one with `holo token`"
        )
    if claims.token_id in revoked:
        raise AuthError("this token was revoked; ask for a new one (`holo token`)")
    return claims


def token_id(token: str) -> str:
    """The id (``jti``) of a token, read without checking its signature: what
    ``holo token --revoke`` is given may be the whole token rather than its id."""
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != _PREFIX:
        raise InvalidRequestError(
            "that is not a holo token; pass a token id or a whole token (holo1....)"
        )
    try:
        found = json.loads(_unb64(parts[1])).get("jti")
    except (binascii.Error, ValueError, AttributeError, RecursionError) as err:
        raise InvalidRequestError("the token's claims are unreadable") from err
    if not isinstance(found, str) or not found:
        raise InvalidRequestError(
            "the token has no id (minted by an older holo): the server refuses it already"
        )
    return found


def revocation_path(
    data_dir: str | os.PathLike[str] | None, *, secret: str | os.PathLike[str] | None = None
) -> Path:
    """The revocation list: next to the secret (``<data>/revoked-tokens`` by default), so
    nodes that share a secret file share its revocations too."""
    if secret is not None:
        return Path(secret).parent / _REVOKED_FILE
    if data_dir is None:
        raise AuthError("no revocation list: give the server's --data folder or --secret file")
    return Path(data_dir) / _REVOKED_FILE


def revoke_token(path: str | os.PathLike[str], ident: str) -> None:
    """Append a token id to the revocation list ``path`` (created 0600), durably."""
    if not _JTI.match(ident):
        raise InvalidRequestError(
            f"{ident[:64]!r} is not a token id (the 16 characters `holo token --json` prints "
            "as id); pass the id or the whole token"
        )
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, f"{ident}  # revoked {stamp}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


class RevocationList:
    """The ids of revoked tokens, read from ``path`` (one id per line, ``#`` comments) and
    read again whenever the file changes: each lookup costs one ``stat`` (~1 us), so a
    revocation takes effect at the next call, on every node that shares the file, with
    no restart. A missing file is an empty list.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._seen: tuple[int, int, int] | None = None
        self._ids: frozenset[str] = frozenset()

    def _current(self) -> frozenset[str]:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            self._seen, self._ids = None, frozenset()
            return self._ids
        except OSError as err:  # keep what was read; a revocation is never forgotten
            logger.warning("cannot read the token revocation list: %s", err.strerror)
            return self._ids
        seen = (info.st_ino, info.st_size, info.st_mtime_ns)
        if seen != self._seen:
            try:
                text = self.path.read_text("ascii", errors="replace")
            except OSError as err:
                logger.warning("cannot read the token revocation list: %s", err.strerror)
                return self._ids
            self._ids = frozenset(
                word for line in text.splitlines() if (word := line.split("#", 1)[0].strip())
            )
            self._seen = seen
        return self._ids

    def __contains__(self, ident: object) -> bool:
        return ident in self._current()


def deid_salt(secret: bytes) -> str:
    """The key of the replacement UIDs as holo before ``deid.key`` derived it from the
    token secret (kept for data folders made then: :func:`load_deid_salt`)."""
    return hmac.new(secret, b"holo de-identification v1", hashlib.sha256).hexdigest()


def load_deid_salt(
    data_dir: str | os.PathLike[str], *, secret: str | os.PathLike[str] | None = None
) -> str:
    """The key of the replacement UIDs non-radiologists see: ``deid.key`` next to the
    token secret (``<data_dir>/deid.key`` by default; beside the ``secret`` file when one
    is given, so nodes that share a secret give a study the same replacement UIDs, as
    they did when the key was derived from it). 64 hex characters, 0600, made on first
    use; never sent anywhere.

    Call it before :func:`load_secret` creates a secret. A folder that has a token secret
    but no ``deid.key`` was made by a holo that derived the key from the secret: that
    derived key is written, so the replacement UIDs stay those already stored. Otherwise
    the key is random, independent of the secret: rotating the secret (replacing the
    secret file, not this one) then changes no replacement UID.
    """
    secret_path = Path(secret) if secret is not None else Path(data_dir) / _SECRET_FILE
    path = secret_path.parent / _DEID_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        try:
            legacy = deid_salt(secret_path.read_bytes())
        except FileNotFoundError:
            legacy = None
        key = legacy or secrets.token_hex(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # made meanwhile (another process): read it below
        else:
            try:
                os.write(fd, key.encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
    key = path.read_text("ascii", errors="replace").strip()
    if not re.fullmatch(r"[0-9a-f]{64}", key):
        raise AuthError(
            f"{path}: the de-identification key is not 64 hex characters; restore it from a "
            "backup (a new one would change the replacement UIDs of every new model)"
        )
    return key
