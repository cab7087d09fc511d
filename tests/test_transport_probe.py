"""What a caller who reaches the port can send: bytes that are no message, huge ids.

A real ``holo serve`` process (:class:`holo.testing.ServeProcess`), spoken to over raw gRPC
channels that send bytes as they are (no serializer), the way an attacker's client would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from holo.errors import NotFoundError, quote_id
from holo.server.interceptors import METHOD_ROLES
from holo.server.ratelog import RateLimitedLog
from holo.testing import ServeProcess
from holo.v1 import asset_pb2, clock_pb2, session_pb2, video_pb2

#: Not a protobuf message: a field tag with wire type 7 (there is none).
GARBAGE = b"\x0f\xff\xff\xff\xff"
INTERNALS = ("DecodeError", "Traceback", "google.protobuf", "Error parsing", "Unexpected <class")

RPCS = [
    (f"/{service.full_name}/{method.name}", method.server_streaming)
    for module in (asset_pb2, session_pb2, clock_pb2, video_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]


@pytest.fixture(scope="module")
def channel(served: ServeProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(served.address) as opened:
        yield opened


def _call(
    channel: grpc.Channel, method: str, streaming: bool, payload: bytes, token: str | None
) -> grpc.RpcError:
    metadata = () if token is None else (("authorization", f"Bearer {token}"),)
    with pytest.raises(grpc.RpcError) as err:
        if streaming:
            list(channel.unary_stream(method)(payload, metadata=metadata, timeout=30))
        else:
            channel.unary_unary(method)(payload, metadata=metadata, timeout=30)
    return err.value


def _assert_clean(details: str) -> None:
    assert len(details.splitlines()) == 1, details
    for internal in INTERNALS:
        assert internal not in details, details


@pytest.mark.parametrize(("method", "streaming"), RPCS, ids=[m for m, _ in RPCS])
def test_garbage_without_a_token_is_unauthenticated_before_parsing(
    channel: grpc.Channel, method: str, streaming: bool
) -> None:
    err = _call(channel, method, streaming, GARBAGE, None)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (err.code(), err.details())
    _assert_clean(err.details() or "")


@pytest.mark.parametrize(("method", "streaming"), RPCS, ids=[m for m, _ in RPCS])
def test_garbage_with_a_valid_token_is_invalid_argument_in_one_line(
    served: ServeProcess, channel: grpc.Channel, method: str, streaming: bool
) -> None:
    role = sorted(METHOD_ROLES[method])[0]
    err = _call(channel, method, streaming, GARBAGE, served.token(role))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    details = err.details() or ""
    _assert_clean(details)
    assert "is not a valid holo.v1." in details and "proto version" in details


def test_garbage_to_the_open_services_is_invalid_argument(channel: grpc.Channel) -> None:
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    with pytest.raises(grpc.RpcError) as err:
        check(GARBAGE, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "grpc.health.v1.HealthCheckRequest" in (err.value.details() or "")
    _assert_clean(err.value.details() or "")
    # A client-streaming (bidirectional) method: each message is decoded when read.
    info = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    with pytest.raises(grpc.RpcError) as err:
        list(info(iter([GARBAGE]), timeout=30))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _assert_clean(err.value.details() or "")


def test_a_flood_of_bad_calls_adds_a_bounded_number_of_log_lines(
    served: ServeProcess, channel: grpc.Channel
) -> None:
    token = served.token("radiologist")
    method = "/holo.v1.AssetService/ListModels"
    before = len(served.lines)
    for n in range(500):
        _call(channel, method, False, GARBAGE, token if n % 2 else None)
    # The server writes nothing more after its last answer; give its stderr pipe a moment.
    time.sleep(0.5)
    added = served.lines[before:]
    assert len(added) <= 10, "".join(added[:20])
    assert not any("Traceback" in line for line in added)
    assert sum(len(line) for line in added) < 2000
    # The server still serves.
    with served.client("observer") as observer:
        observer.list_models()


def test_ids_over_128_characters_are_refused_early_and_not_echoed(
    served: ServeProcess, tmp_path: Path
) -> None:
    huge = "s" * (1 << 20)  # 1 MiB: within the server's receive limit (1 MiB + 64 KiB)
    requests = {
        "/holo.v1.SessionService/Heartbeat": (
            "presenter",
            session_pb2.HeartbeatRequest(session_id={"value": huge}),
        ),
        "/holo.v1.AssetService/GetModel": (
            "observer",
            asset_pb2.GetModelRequest(model_id={"value": huge}),
        ),
        "/holo.v1.ConversionService/WatchJob": (
            "radiologist",
            asset_pb2.WatchJobRequest(job_id={"value": huge}),
        ),
        "/holo.v1.SessionService/CreateSession": (
            "presenter",
            session_pb2.CreateSessionRequest(case_id="c" * 129),
        ),
    }
    with grpc.insecure_channel(served.address) as channel:
        for method, (role, request) in requests.items():
            streaming = dict(RPCS)[method]
            err = _call(channel, method, streaming, request.SerializeToString(), served.token(role))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, err.code())
            details = err.details() or ""
            assert len(details) < 300 and "characters long" in details, details
            assert "sss" not in details and "ccc" not in details


def test_ids_in_error_messages_are_shortened() -> None:
    huge = "m" * (1 << 20)
    message = NotFoundError("model", huge).message
    assert len(message) < 300 and f"({1 << 20} chars)" in message
    assert quote_id("model-1") == "'model-1'"
    assert quote_id("x" * 128) == repr("x" * 128)  # a well-formed id is shown whole


def test_rate_limited_log_writes_a_burst_then_counts_what_it_suppressed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    log = RateLimitedLog(
        logging.getLogger("holo.test.ratelog"), burst=2, interval_s=60, clock=lambda: now[0]
    )
    with caplog.at_level(logging.INFO, logger="holo.test.ratelog"):
        written = [log.log(logging.WARNING, "bad", "bad request %d", n) for n in range(100)]
        assert written == [True, True] + [False] * 98
        assert log.log(logging.WARNING, "other", "another kind")  # keys are separate
        now[0] = 61.0
        assert log.log(logging.WARNING, "bad", "bad request again")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "bad request 0",
        "bad request 1 (further similar messages suppressed for 60 s)",
        "another kind",
        "bad request again (98 similar messages suppressed before this one)",
    ]


@pytest.mark.parametrize(
    ("method", "request_"),
    [
        (
            "/holo.v1.UploadService/StartUpload",
            asset_pb2.StartUploadRequest(name="n" * (1 << 20), size_bytes=1, sha256="0" * 64),
        ),
        (
            "/holo.v1.UploadService/StartUpload",
            asset_pb2.StartUploadRequest(name="a.dcm", size_bytes=1, sha256="f" * (1 << 20)),
        ),
    ],
    ids=["file-name", "sha256"],
)
def test_a_megabyte_of_text_is_not_echoed_in_the_status(
    served: ServeProcess, channel: grpc.Channel, method: str, request_: object
) -> None:
    payload = request_.SerializeToString()  # type: ignore[attr-defined]
    err = _call(channel, method, False, payload, served.token("radiologist"))
    details = err.details() or ""
    # On main the whole megabyte came back: over gRPC's 16 KiB metadata limit, the client
    # saw RESOURCE_EXHAUSTED ("received metadata size exceeds hard limit") instead.
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, details
    assert len(details) < 400 and f"({1 << 20} chars)" in details, details


def test_a_megabyte_preset_name_is_not_echoed(
    served: ServeProcess, channel: grpc.Channel, sample_ct: Path
) -> None:
    with served.client("radiologist") as radiologist:
        study = radiologist.upload_study([sample_ct])
    request = asset_pb2.StartConversionRequest(study_id=study.study_id, preset="p" * (1 << 20))
    method = "/holo.v1.ConversionService/StartConversion"
    err = _call(channel, method, False, request.SerializeToString(), served.token("radiologist"))
    details = err.details() or ""
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "unknown preset" in details and len(details) < 400, details
