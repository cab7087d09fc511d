"""The web port at the protocol level: gRPC-Web (and Connect) beside the native port.

A real ``holo serve`` listener pair in-process over real TLS; the client is
:class:`holo.testing.grpcweb.GrpcWebClient`, written from the gRPC-Web text and speaking
HTTP/1.1 with ``application/grpc-web`` as HoloLens 2's ``GrpcWebHandler`` does. Each case
compares the web port with the native one: the same replies, codes and messages, the same
audit, because both ports resolve calls through one handler table.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from tls import TestPKI, make_pki

from holo.auth import mint_token, revocation_path, revoke_token, token_id
from holo.client.session import SessionClient
from holo.errors import InvalidRequestError
from holo.server import ServerConfig
from holo.server.app import start_server
from holo.server.handlers import HandlerTable
from holo.server.interceptors import AuthInterceptor, ErrorInterceptor
from holo.server.page import CONTENT_SECURITY_POLICY
from holo.server.web import start_web, web_app
from holo.session.records import Ray
from holo.testing import TestServer
from holo.testing.grpcweb import GrpcWebClient, GrpcWebError, frame
from holo.v1 import asset_pb2, asset_pb2_grpc, common_pb2, session_pb2, session_pb2_grpc

LIST_MODELS = "/holo.v1.AssetService/ListModels"
GET_MODEL = "/holo.v1.AssetService/GetModel"
JOIN = "/holo.v1.SessionService/Join"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, pki: TestPKI, knee_glb: Path
) -> Iterator[TestServer]:
    with TestServer(
        tmp_path_factory.mktemp("store"),
        tls=(pki.cert, pki.key),
        web=True,
        web_origins=("https://viewer.example:8443",),
    ) as running:
        running.model_id = running.publish_model("case-1", knee_glb)  # type: ignore[attr-defined]
        yield running


def web(server: TestServer, pki: TestPKI, role: str = "observer", **kw: object) -> GrpcWebClient:
    token = None if role == "" else server.token(role, **kw)  # type: ignore[arg-type]
    return GrpcWebClient(server.web_url, token=token, ca=pki.ca_pem)


def create_session(
    server: TestServer, pki: TestPKI, case_id: str = "case-1"
) -> session_pb2.SessionInfo:
    """The case's session, opened by a presenter over the native port."""
    with grpc.secure_channel(server.address, grpc.ssl_channel_credentials(pki.ca_pem)) as channel:
        stub = session_pb2_grpc.SessionServiceStub(channel)
        metadata = (("authorization", f"Bearer {server.token('presenter', case_id)}"),)
        info: session_pb2.SessionInfo = stub.CreateSession(
            session_pb2.CreateSessionRequest(), metadata=metadata
        )
        return info


def native_error(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_a_unary_call_over_http11_answers_as_the_native_port(
    server: TestServer, pki: TestPKI
) -> None:
    client = web(server, pki)
    call = client.call(LIST_MODELS, asset_pb2.ListModelsRequest())
    assert call.http_status == 200
    assert call.headers["content-type"].startswith("application/grpc-web")
    assert call.trailers["grpc-status"] == "0"
    reply = asset_pb2.ListModelsResponse.FromString(call.messages[0])
    with server.client("observer", ca=pki.ca_pem) as native:
        assert list(reply.models) == native.list_models()
    assert [m.model_id.value for m in reply.models] == [server.model_id]  # type: ignore[attr-defined]


def test_a_server_stream_streams_the_same_model_bytes(server: TestServer, pki: TestPKI) -> None:
    request = asset_pb2.GetModelRequest(model_id=common_pb2.ModelId(value=server.model_id))  # type: ignore[attr-defined]
    replies = list(web(server, pki).stream(GET_MODEL, request, asset_pb2.GetModelResponse))
    manifest = replies[0].manifest
    data = b"".join(r.data.data for r in replies[1:])
    with server.client("observer", ca=pki.ca_pem) as native:
        fetched = native.fetch_model(server.model_id)  # type: ignore[attr-defined]
    assert data == fetched.data
    assert manifest == fetched.manifest
    # One message per LOD at least: each level is complete with the message that ends it.
    ends = {r.data.offset + len(r.data.data) for r in replies[1:]}
    assert {lod.complete_at_bytes for lod in manifest.lods} <= ends
    assert len(replies) - 1 >= len(manifest.lods)


def test_messages_arrive_while_the_stream_is_open(server: TestServer, pki: TestPKI) -> None:
    """Join never ends by itself: its first message must reach the client at once."""
    session_id = create_session(server, pki).session_id.value
    request = session_pb2.JoinRequest(session_id=common_pb2.SessionId(value=session_id))
    started = time.monotonic()
    stream = web(server, pki).stream(JOIN, request, session_pb2.SessionMessage)
    first = next(stream)
    assert first.WhichOneof("kind") == "accepted"
    assert time.monotonic() - started < 5
    stream.close()  # type: ignore[attr-defined]


def test_an_error_after_the_first_message_reaches_the_client(
    server: TestServer, pki: TestPKI
) -> None:
    """A token revoked while its Join stream runs ends the stream, after messages were
    sent, with UNAUTHENTICATED and the server's message in the trailer frame."""
    token = server.token("observer", subject="revoked-observer")
    presenter_token = server.token("presenter")
    client = GrpcWebClient(server.web_url, token=token, ca=pki.ca_pem)

    async def scenario() -> tuple[list[str], GrpcWebError | None]:
        presenter = SessionClient(server.address, token=presenter_token, ca=pki.ca_pem)
        info = await presenter.create_session()
        await presenter.join(info.session_id.value)
        request = session_pb2.JoinRequest(session_id=info.session_id)
        kinds: list[str] = []
        failure: GrpcWebError | None = None

        def read() -> None:
            nonlocal failure
            try:
                for message in client.stream(JOIN, request, session_pb2.SessionMessage):
                    kinds.append(message.WhichOneof("kind") or "")
                    if len(kinds) == 1:
                        revoke_token(revocation_path(server.data), token_id(token))
            except GrpcWebError as err:
                failure = err

        reader = threading.Thread(target=read)
        reader.start()
        # Pointer updates keep the stream busy: the revocation is checked between items.
        deadline = time.monotonic() + 15
        while reader.is_alive() and time.monotonic() < deadline:
            await presenter.pointer(Ray((0, 1, 0), (0, 0, -1)))
            await asyncio.sleep(0.1)
        reader.join(5)
        await presenter.close()
        return kinds, failure

    kinds, failure = asyncio.run(scenario())
    assert kinds and kinds[0] == "accepted"
    assert failure is not None, "the stream did not end"
    assert failure.code == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in failure.message


class _EmptyAssets(asset_pb2_grpc.AssetServiceServicer):
    """An AssetService whose GetModel sends nothing: the transport's empty stream."""

    async def GetModel(  # noqa: N802 (the servicer's method name)
        self, request: object, context: object
    ) -> AsyncIterator[object]:
        for _ in ():
            yield _


def test_an_empty_stream_ends_ok_with_no_message(tmp_path: Path, pki: TestPKI) -> None:
    secret = b"s" * 32

    async def scenario() -> tuple[list[bytes], dict[str, str]]:
        table = HandlerTable(None, [ErrorInterceptor(tmp_path), AuthInterceptor(secret)])
        asset_pb2_grpc.add_AssetServiceServicer_to_server(_EmptyAssets(), table)
        app = web_app(
            table,
            [asset_pb2.DESCRIPTOR.services_by_name["AssetService"]],
            root=None,
            read_max_bytes=1 << 20,
        )
        port = await start_web(
            app, "127.0.0.1", 0, tls_cert=pki.cert, tls_key=pki.key, tls_client_ca=None, grace_s=1
        )
        token = mint_token(secret, role="observer", case_id="c", subject="s", ttl_s=60)
        client = GrpcWebClient(f"https://localhost:{port.port}/", token=token, ca=pki.ca_pem)
        request = asset_pb2.GetModelRequest(model_id=common_pb2.ModelId(value="m-1"))
        try:
            items = await asyncio.to_thread(lambda: list(client.open(GET_MODEL, request)))
        finally:
            await port.stop(1)
        call = items[-1]
        return call.messages, call.trailers  # type: ignore[union-attr]

    messages, trailers = asyncio.run(scenario())
    assert messages == []
    assert trailers["grpc-status"] == "0"


@pytest.mark.parametrize(
    ("role", "method", "request_message", "code"),
    [
        ("", LIST_MODELS, asset_pb2.ListModelsRequest(), grpc.StatusCode.UNAUTHENTICATED),
        (
            "observer",
            "/holo.v1.UploadService/StartUpload",
            asset_pb2.StartUploadRequest(),
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        (
            "observer",
            GET_MODEL,
            asset_pb2.GetModelRequest(model_id=common_pb2.ModelId(value="mdl_nope")),
            grpc.StatusCode.NOT_FOUND,
        ),
        ("observer", LIST_MODELS, b"\xff\xff\xff", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_auth_roles_and_errors_are_the_native_ports(
    server: TestServer,
    pki: TestPKI,
    role: str,
    method: str,
    request_message: object,
    code: grpc.StatusCode,
) -> None:
    with pytest.raises(GrpcWebError) as caught:
        web(server, pki, role).call(method, request_message)
    assert caught.value.code == code
    channel = grpc.secure_channel(server.address, grpc.ssl_channel_credentials(pki.ca_pem))
    metadata = () if role == "" else (("authorization", f"Bearer {server.token(role)}"),)
    body = (
        request_message
        if isinstance(request_message, bytes)
        else request_message.SerializeToString()
    )  # type: ignore[attr-defined]
    stream = method == GET_MODEL
    invoke = (channel.unary_stream if stream else channel.unary_unary)(method)
    error = native_error(
        lambda: list(invoke(body, metadata=metadata)) if stream else invoke(body, metadata=metadata)
    )
    channel.close()
    assert error.code() == code
    assert error.details() == caught.value.message


def test_an_unknown_method_is_unimplemented(server: TestServer, pki: TestPKI) -> None:
    items = list(web(server, pki).open("/holo.v1.AssetService/Nothing", b""))
    assert items[-1].trailers["grpc-status"] == str(grpc.StatusCode.UNIMPLEMENTED.value[0])  # type: ignore[union-attr]


def test_the_connect_protocol_is_served_too(server: TestServer, pki: TestPKI) -> None:
    body = asset_pb2.ListModelsRequest().SerializeToString()
    connection = _https(server, pki)
    connection.request(
        "POST",
        LIST_MODELS,
        body=body,
        headers={
            "content-type": "application/proto",
            "connect-protocol-version": "1",
            "authorization": f"Bearer {server.token('observer')}",
        },
    )
    response = connection.getresponse()
    assert response.status == 200
    reply = asset_pb2.ListModelsResponse.FromString(response.read())
    assert len(reply.models) == 1


def _https(server: TestServer, pki: TestPKI) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cadata=pki.ca_pem.decode())
    return http.client.HTTPSConnection("localhost", server.web_port, context=context, timeout=10)


def test_http2_is_offered_over_tls(server: TestServer, pki: TestPKI) -> None:
    context = ssl.create_default_context(cadata=pki.ca_pem.decode())
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("localhost", server.web_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"


def test_the_page_is_served_with_a_strict_policy(server: TestServer, pki: TestPKI) -> None:
    connection = _https(server, pki)
    connection.request("GET", "/")
    response = connection.getresponse()
    body = response.read()
    headers = {k.lower(): v for k, v in response.getheaders()}
    assert response.status == 200, "the page is not built: run `make setup`"
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert "'unsafe-eval'" not in CONTENT_SECURITY_POLICY.replace("'wasm-unsafe-eval'", "")
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["strict-transport-security"].startswith("max-age=")
    assert "access-control-allow-origin" not in headers
    assert b"<script" in body and b"<script>" not in body  # no inline script
    connection.request("GET", "/no-such-file.js")
    missing = connection.getresponse()
    missing.read()
    assert missing.status == 404


def test_cors_answers_only_the_origins_given(server: TestServer, pki: TestPKI) -> None:
    def preflight(origin: str) -> dict[str, str]:
        connection = _https(server, pki)
        connection.request(
            "OPTIONS",
            LIST_MODELS,
            headers={
                "origin": origin,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization,content-type,x-grpc-web",
            },
        )
        response = connection.getresponse()
        response.read()
        return {k.lower(): v for k, v in response.getheaders()} | {"status": str(response.status)}

    allowed = preflight("https://viewer.example:8443")
    assert allowed["status"] == "200"
    assert allowed["access-control-allow-origin"] == "https://viewer.example:8443"
    refused = preflight("https://elsewhere.example")
    assert refused.get("access-control-allow-origin") != "https://elsewhere.example"
    # A real call from the allowed origin may read the status trailers.
    connection = _https(server, pki)
    connection.request(
        "POST",
        LIST_MODELS,
        body=frame(b""),
        headers={
            "origin": "https://viewer.example:8443",
            "content-type": "application/grpc-web+proto",
            "authorization": f"Bearer {server.token('observer')}",
        },
    )
    response = connection.getresponse()
    response.read()
    exposed = response.getheader("access-control-expose-headers", "")
    assert "grpc-status" in exposed and "grpc-message" in exposed


def test_a_join_over_the_web_port_is_audited(server: TestServer, pki: TestPKI) -> None:
    session_id = create_session(server, pki).session_id.value
    request = session_pb2.JoinRequest(session_id=common_pb2.SessionId(value=session_id))
    client = GrpcWebClient(
        server.web_url, token=server.token("observer", subject="web-auditee"), ca=pki.ca_pem
    )
    stream = client.stream(JOIN, request, session_pb2.SessionMessage)
    accepted = next(stream).accepted
    stream.close()  # type: ignore[attr-defined]
    pid = accepted.participant_id.value
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [json.loads(x) for x in (server.data / "audit.jsonl").read_text().splitlines()]
        joined = [r for r in lines if r.get("participant_id") == pid and r["action"] == "joined"]
        if joined:
            break
        time.sleep(0.1)
    assert joined and joined[0]["subject"] == "web-auditee"


def test_find_session_answers_every_role(server: TestServer, pki: TestPKI) -> None:
    with pytest.raises(GrpcWebError) as missing:
        web(server, pki, case_id="case-find").unary(
            "/holo.v1.SessionService/FindSession",
            session_pb2.FindSessionRequest(),
            session_pb2.SessionInfo,
        )
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert "presenter opens it" in missing.value.message
    created = create_session(server, pki, "case-find")
    for role in ("observer", "expert", "radiologist"):
        found = web(server, pki, role, case_id="case-find").unary(
            "/holo.v1.SessionService/FindSession",
            session_pb2.FindSessionRequest(),
            session_pb2.SessionInfo,
        )
        assert found.session_id == created.session_id


def test_plain_text_web_port_only_on_loopback(tmp_path: Path) -> None:
    config = ServerConfig(data=tmp_path, insecure=True, listen="127.0.0.1:0", web="0.0.0.0:0")
    with pytest.raises(InvalidRequestError, match="not a loopback address"):
        asyncio.run(start_server(config))


def test_a_web_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = ServerConfig(
            data=tmp_path, insecure=True, listen="127.0.0.1:0", web=f"127.0.0.1:{port}"
        )
        with pytest.raises(InvalidRequestError, match=f"cannot listen on 127.0.0.1:{port}"):
            asyncio.run(start_server(config))


def test_frames_are_length_prefixed() -> None:
    assert frame(b"abc") == b"\x00" + struct.pack(">I", 3) + b"abc"
