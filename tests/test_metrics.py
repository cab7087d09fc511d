"""Observability: Prometheus metrics scraped over real HTTP from a real server, JSON log
lines inside and outside a call, and health that follows a real Redis bus stopped and
started again.

Counters are shared by every server in the process (``holo.metrics.REGISTRY``), so each
test compares a scrape after its calls with one before them.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from redis_server import RedisServer

import holo.server.monitor
from holo.errors import InvalidRequestError
from holo.server import ServerConfig
from holo.server.app import _metrics_tls
from holo.server.logs import JsonFormatter
from holo.session import HubConfig
from holo.testing import TestServer
from holo.testing.clients import InstrumentedSessionClient
from holo.v1 import asset_pb2, asset_pb2_grpc, common_pb2, session_pb2, session_pb2_grpc

CASE = "case-metrics-7f3a"
FAST = HubConfig(heartbeat_interval_s=0.2, away_after_s=5.0, sweep_interval_s=0.1)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServer]:
    with TestServer(tmp_path_factory.mktemp("metrics"), metrics=True, session=FAST) as running:
        yield running


def scrape_text(server: TestServer) -> str:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.status == 200
        return str(reply.read().decode())


def scrape(server: TestServer) -> Samples:
    """Every sample by (name, sorted labels)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(scrape_text(server)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def stub_metadata(server: TestServer, role: str, case: str, subject: str, **more: str) -> list:
    token = server.token(role, case, subject=subject)
    return [("authorization", f"Bearer {token}"), *more.items()]


def wait_until(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.1)


LIST = "/holo.v1.AssetService/ListModels"
GET = "/holo.v1.AssetService/GetModel"
JOIN = "/holo.v1.SessionService/Join"


def test_calls_are_counted_by_method_and_status_code(server: TestServer) -> None:
    before = scrape(server)
    with grpc.insecure_channel(server.address) as channel:
        assets = asset_pb2_grpc.AssetServiceStub(channel)
        meta = stub_metadata(server, "radiologist", CASE, "dr-count")
        for _ in range(2):
            assets.ListModels(asset_pb2.ListModelsRequest(), metadata=meta)
        with pytest.raises(grpc.RpcError) as missing:
            request = asset_pb2.GetModelRequest(model_id=common_pb2.ModelId(value="mdl_nothing"))
            list(assets.GetModel(request, metadata=meta))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as refused:
            assets.ListModels(asset_pb2.ListModelsRequest())  # no token
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("holo_rpc_started_total", method=LIST) == 3
    assert delta("holo_rpc_handled_total", method=LIST, code="OK") == 2
    assert delta("holo_rpc_handled_total", method=LIST, code="UNAUTHENTICATED") == 1
    assert delta("holo_rpc_handled_total", method=GET, code="NOT_FOUND") == 1
    assert delta("holo_rpc_duration_seconds_count", method=LIST) == 3
    assert delta("holo_rpc_duration_seconds_bucket", method=LIST, le="+Inf") == 3
    assert delta("holo_rpc_messages_received_total", method=LIST) == 3
    assert delta("holo_rpc_messages_sent_total", method=LIST) == 2
    assert value(after, "holo_open_streams", kind="model") == 0  # GetModel's stream ended
    assert value(after, "holo_session_bus_up") == 1
    # Only method and code: no other label reaches a call's series.
    for name, labels in after:
        if name.startswith("holo_rpc_"):
            assert {key for key, _ in labels} <= {"method", "code", "le"}, (name, labels)


def test_a_session_is_counted_by_role_and_kind_and_never_named(server: TestServer) -> None:
    case = "case-7731-knee-left"
    names = {"presenter": "Dr Alice Presenter", "expert": "Dr Bob Remote", "observer": "Carol"}
    subjects = {role: name.lower().replace(" ", ".") for role, name in names.items()}
    before = scrape(server)
    clients: dict[str, InstrumentedSessionClient] = {}

    async def procedure() -> tuple[str, list[str], str]:
        """Join, act, and scrape while the streams are open (the clients' loop runs)."""
        for role, name in names.items():
            clients[role] = InstrumentedSessionClient(
                server.address,
                token=server.token(role, case, subject=subjects[role]),
                insecure=True,
                display_name=name,
            )
        try:
            info = await clients["presenter"].create_session()
            for client in clients.values():
                await client.join(info.session_id.value)
            seq = await clients["expert"].request_control()
            for client in clients.values():
                await client.wait_seq(seq)
            text = await asyncio.to_thread(scrape_text, server)
            return info.session_id.value, [c.participant_id for c in clients.values()], text
        finally:
            for client in clients.values():
                await client.close()

    session_id, participant_ids, text = asyncio.run(asyncio.wait_for(procedure(), 60))
    during = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    for role in names:
        assert value(during, "holo_session_participants", role=role) >= 1
    assert value(during, "holo_open_streams", kind="session") >= 3
    assert value(during, "holo_sessions_live") >= 1
    lag = value(during, "holo_session_fanout_lag_seconds_count")
    assert lag > value(before, "holo_session_fanout_lag_seconds_count")
    assert value(during, "holo_rpc_messages_sent_total", method=JOIN) > value(
        before, "holo_rpc_messages_sent_total", method=JOIN
    )
    # Nothing that names the case, the session, a participant or a person.
    people = (*names.values(), *subjects.values())
    for secret in (case, session_id, *participant_ids, *people, "7731"):
        assert secret not in text, secret
    allowed = {"method", "code", "role", "kind", "outcome", "le"}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("holo_"):
            for sample in family.samples:
                assert set(sample.labels) <= allowed, sample
    # The streams closed: none open, each counted once as handled.
    wait_until(
        lambda: (
            value(scrape(server), "holo_open_streams", kind="session")
            == value(before, "holo_open_streams", kind="session")
        )
    )
    after = scrape(server)
    joins = sum(
        v - value(before, n, **dict(labels))
        for (n, labels), v in after.items()
        if n == "holo_rpc_handled_total" and dict(labels).get("method") == JOIN
    )
    assert joins == len(clients)


def test_store_totals_and_jobs_are_sampled_at_scrape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(holo.server.monitor, "STORE_SAMPLE_S", 0.0)  # no cache in the test
    with TestServer(tmp_path / "store", metrics=True) as running:
        empty = scrape(running)
        assert value(empty, "holo_store_studies") == 0
        assert value(empty, "holo_store_blob_bytes") == 0
        assert value(empty, "holo_jobs_queued") == 0
        assert value(empty, "holo_jobs_running") == 0
        assert value(empty, "holo_video_viewers") == 0
        store = running.running.store if running.running else None
        assert store is not None
        body = b"a placeholder file of 36 bytes ....\n"
        upload = store.start_upload(
            case_id=CASE, name="a.dcm", size_bytes=len(body), sha256=_sha(body), subject="t"
        )
        store.append_chunk(upload.upload_id, 0, body)
        summary = {"series": [], "public_series": [], "identity": {}}
        store.create_study(case_id=CASE, upload_ids=[upload.upload_id], summary=summary)
        one = scrape(running)
        assert value(one, "holo_store_studies") == 1
        assert value(one, "holo_store_models") == 0
        assert value(one, "holo_store_blob_bytes") == len(body)


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_json_log_lines_carry_the_request_id_and_subject_inside_a_call(
    server: TestServer,
) -> None:
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    holo_logger = logging.getLogger("holo")
    level = holo_logger.level
    holo_logger.addHandler(handler)
    holo_logger.setLevel(logging.INFO)
    try:
        logging.getLogger("holo.test").warning("outside any call")
        with grpc.insecure_channel(server.address) as channel:
            sessions = session_pb2_grpc.SessionServiceStub(channel)
            meta = stub_metadata(
                server,
                "observer",
                "case-without-a-session",
                "dr-json",
                **{"x-request-id": "req-42"},
            )
            with pytest.raises(grpc.RpcError) as none:
                sessions.FindSession(session_pb2.FindSessionRequest(), metadata=meta)
            assert none.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        holo_logger.removeHandler(handler)
        holo_logger.setLevel(level)
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert records, "nothing was logged"
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record)
        assert record["time"].endswith("Z")
    outside = next(r for r in records if r["message"] == "outside any call")
    assert "request_id" not in outside and "subject" not in outside
    inside = [r for r in records if "FindSession" in r["message"]]
    assert inside, records
    assert inside[0]["request_id"] == "req-42"
    assert inside[0]["subject"] == "dr-json"
    assert inside[0]["logger"] == "holo.server.interceptors"


def test_metrics_in_plain_text_only_on_loopback(tmp_path: Path) -> None:
    config = ServerConfig(data=tmp_path, insecure=True, metrics="0.0.0.0:0")
    with pytest.raises(InvalidRequestError, match="not a loopback address"):
        _metrics_tls(config)
    config.metrics = "127.0.0.1:50051"  # the native port's
    with pytest.raises(InvalidRequestError, match="a port of its own"):
        _metrics_tls(config)


def test_health_follows_the_redis_bus(tmp_path: Path) -> None:
    sessions = "holo.v1.SessionService"
    redis = RedisServer()
    with (
        redis as url,
        TestServer(tmp_path / "store", bus=url, metrics=True) as running,
        grpc.insecure_channel(running.address) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)

        def status(service: str) -> int:
            request = health_pb2.HealthCheckRequest(service=service)
            return int(health.Check(request, timeout=5).status)

        serving, not_serving = (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        assert status(sessions) == serving
        redis.stop()
        wait_until(lambda: status(sessions) == not_serving)
        assert status("") == not_serving
        assert status("holo.v1.AssetService") == serving  # the store is fine
        assert status("holo.v1.VideoService") == not_serving  # a track is a session's
        assert value(scrape(running), "holo_session_bus_up") == 0
        redis.start()
        wait_until(lambda: status(sessions) == serving)
        assert status("") == serving
        assert value(scrape(running), "holo_session_bus_up") == 1
