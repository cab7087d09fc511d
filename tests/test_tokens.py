"""Token lifetime, revocation and the de-identification key, against a real server.

``holo serve`` runs as a process (:class:`holo.testing.ServeProcess`) and ``holo token``
as the command an operator types; revocation must take effect without a restart.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from holo.auth import (
    MAX_TOKEN_TTL_S,
    _b64,
    _sign,
    deid_salt,
    load_deid_salt,
    load_secret,
    mint_token,
    revocation_path,
    revoke_token,
    token_id,
    verify_token,
)
from holo.client import ClientError, HoloClient
from holo.errors import AuthError, InvalidRequestError
from holo.testing import ServeProcess, TestServer
from holo.v1 import session_pb2, session_pb2_grpc

CASE = "case-1"


def holo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "holo.cli", *args], capture_output=True, text=True, timeout=60
    )


def _refusal(address: str, token: str) -> ClientError:
    with (
        HoloClient(address, token=token, insecure=True) as caller,
        pytest.raises(ClientError) as err,
    ):
        caller.list_models()
    return err.value


# --- lifetime ------------------------------------------------------------------------------


def test_a_token_longer_than_the_maximum_is_not_minted(tmp_path: Path) -> None:
    secret = load_secret(tmp_path)
    with pytest.raises(InvalidRequestError, match="over the maximum of 1d"):
        mint_token(secret, role="observer", case_id=CASE, subject="s", ttl_s=MAX_TOKEN_TTL_S + 1)
    mint_token(secret, role="observer", case_id=CASE, subject="s", ttl_s=MAX_TOKEN_TTL_S)
    done = holo(
        "token", "--data", str(tmp_path), "--role", "observer", "--case", CASE, "--ttl", "30d"
    )
    assert done.returncode == 2
    assert "over the maximum of 1d" in done.stderr and "Traceback" not in done.stderr
    longer = holo(
        "token", "--data", str(tmp_path), "--role", "observer", "--case", CASE,
        "--ttl", "30d", "--max-token-lifetime", "30d",
    )  # fmt: skip
    assert longer.returncode == 0, longer.stderr


def test_the_server_refuses_a_token_minted_to_live_longer_than_its_maximum(
    served: ServeProcess,
) -> None:
    secret = load_secret(served.data)
    long_lived = mint_token(
        secret, role="observer", case_id=CASE, subject="s", ttl_s=30 * 86400, max_ttl_s=1 << 30
    )
    err = _refusal(served.address, long_lived)
    assert err.code == grpc.StatusCode.UNAUTHENTICATED
    assert "over this server's maximum of 1d" in str(err)


def test_the_servers_maximum_is_a_setting(tmp_path: Path) -> None:
    server = TestServer(tmp_path)
    server.config.max_token_ttl_s = 30 * 86400  # holo serve --max-token-lifetime 30d
    with server:
        month = 30 * 86400
        secret = load_secret(tmp_path)
        token = mint_token(
            secret, role="observer", case_id=CASE, subject="s", ttl_s=month, max_ttl_s=month
        )
        with HoloClient(server.address, token=token, insecure=True) as caller:
            caller.list_models()


def test_a_token_without_an_id_is_refused(served: ServeProcess) -> None:
    # What a holo before token ids minted: the same claims without "jti".
    secret = load_secret(served.data)
    now = int(time.time())
    claims = {"sub": "old", "case": CASE, "role": "observer", "iat": now, "exp": now + 3600}
    payload = "holo1." + _b64(json.dumps(claims).encode())
    old = f"{payload}.{_sign(secret, payload)}"
    err = _refusal(served.address, old)
    assert err.code == grpc.StatusCode.UNAUTHENTICATED and "has no id" in str(err)


# --- revocation ----------------------------------------------------------------------------


def test_a_revoked_token_is_refused_at_once_and_others_keep_working(
    served: ServeProcess,
) -> None:
    data = str(served.data)
    minted = holo("token", "--data", data, "--role", "observer", "--case", CASE, "--json")
    assert minted.returncode == 0, minted.stderr
    out = json.loads(minted.stdout)
    token, ident = out["token"], out["id"]
    assert token_id(token) == ident
    other = served.token("observer")
    with HoloClient(served.address, token=token, insecure=True) as caller:
        caller.list_models()  # valid before

    revoked = holo("token", "--data", data, "--revoke", ident)
    assert revoked.returncode == 0, revoked.stderr
    err = _refusal(served.address, token)  # no restart
    assert err.code == grpc.StatusCode.UNAUTHENTICATED and "this token was revoked" in str(err)
    with HoloClient(served.address, token=other, insecure=True) as caller:
        caller.list_models()

    # The whole token is accepted too, and the list is private to the server's user.
    again = holo("token", "--data", data, "--revoke", other)
    assert again.returncode == 0, again.stderr
    assert _refusal(served.address, other).code == grpc.StatusCode.UNAUTHENTICATED
    assert (served.data / "revoked-tokens").stat().st_mode & 0o777 == 0o600


def test_revoking_something_that_is_no_token_id_is_one_line(tmp_path: Path) -> None:
    done = holo("token", "--data", str(tmp_path), "--revoke", "not a token id\n")
    assert done.returncode == 2 and "is not a token id" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_verify_checks_the_revocation_list(tmp_path: Path) -> None:
    secret = load_secret(tmp_path)
    token = mint_token(secret, role="observer", case_id=CASE, subject="s", ttl_s=60)
    with pytest.raises(AuthError, match="revoked"):
        verify_token(secret, token, revoked={token_id(token)})


# --- the de-identification key -------------------------------------------------------------


def test_rotating_the_secret_keeps_the_replacement_uids(tmp_path: Path) -> None:
    key = load_deid_salt(tmp_path)
    secret = load_secret(tmp_path)
    assert key != deid_salt(secret)
    (tmp_path / "secret.key").unlink()  # rotate: every token must be minted again...
    assert load_secret(tmp_path) != secret
    assert load_deid_salt(tmp_path) == key  # ...but the replacement UIDs stay
    assert (tmp_path / "deid.key").stat().st_mode & 0o777 == 0o600


def test_a_data_folder_with_only_a_secret_keeps_its_derived_key(tmp_path: Path) -> None:
    secret = load_secret(tmp_path)  # a data folder made by a holo before deid.key
    assert load_deid_salt(tmp_path) == deid_salt(secret)
    (tmp_path / "secret.key").unlink()
    load_secret(tmp_path)
    assert load_deid_salt(tmp_path) == deid_salt(secret)  # written once, kept


def test_a_revoked_token_loses_its_open_join_stream(served: ServeProcess) -> None:
    secret = load_secret(served.data)
    observer = mint_token(secret, role="observer", case_id=CASE, subject="o", ttl_s=600)
    presenter_md = (("authorization", f"Bearer {served.token('presenter')}"),)
    with grpc.insecure_channel(served.address) as channel:
        stub = session_pb2_grpc.SessionServiceStub(channel)
        info = stub.CreateSession(session_pb2.CreateSessionRequest(), metadata=presenter_md)
        join = session_pb2.JoinRequest(session_id=info.session_id)
        stream = stub.Join(join, metadata=(("authorization", f"Bearer {observer}"),), timeout=60)
        assert next(stream).HasField("accepted")
        revoke_token(revocation_path(served.data), token_id(observer))
        deadline = time.monotonic() + 30
        with pytest.raises(grpc.RpcError) as err:
            while time.monotonic() < deadline:
                # Someone joins: the observer's stream has something to send, and then
                # (once a second) checks its token again.
                other = stub.Join(join, metadata=presenter_md)
                next(other)
                other.cancel()
                next(stream)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in (err.value.details() or "")


def test_nodes_sharing_a_secret_share_the_key(tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "holo.key"
    first = load_deid_salt(tmp_path / "node-a", secret=shared)
    load_secret(tmp_path / "node-a", path=shared)
    assert load_deid_salt(tmp_path / "node-b", secret=shared) == first
    assert (tmp_path / "shared" / "deid.key").exists()


def test_a_token_as_a_link_to_the_web_page(tmp_path: Path) -> None:
    """``--link`` puts the token in the fragment (never sent to a server) of the web
    port's address; a bad address is one line."""
    base = ["token", "--data", str(tmp_path), "--role", "observer", "--case", "knee-42"]
    result = holo(*base, "--link", "https://holo.example:8444")
    assert result.returncode == 0, result.stderr
    link = result.stdout.strip()
    assert link.startswith("https://holo.example:8444/#token=holo1.")
    token = link.split("#token=", 1)[1]
    claims = verify_token(load_secret(tmp_path), token)
    assert (claims.role, claims.case_id) == ("observer", "knee-42")
    default = holo(*base, "--link", "--json")
    assert json.loads(default.stdout)["link"].startswith("http://127.0.0.1:8080/#token=holo1.")
    bad = holo(*base, "--link", "holo.example:8444/?x=1")
    assert bad.returncode != 0
    assert len(bad.stderr.strip().splitlines()) == 1 and "--link" in bad.stderr
