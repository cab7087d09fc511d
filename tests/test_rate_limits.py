"""Per-subject rate limits (holo.server.ratelimit) through a real server on port 0: a
subject over a limit is refused in one line with a retry hint while another subject goes
on; buckets refill; open streams are capped; uploads are throttled; the defaults let the
clients' real rates through."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from holo.client import ClientError, HoloClient
from holo.client.retry import RetryPolicy, retry_after_s
from holo.client.session import SESSION_RETRY
from holo.server.interceptors import METHOD_ROLES
from holo.server.ratelimit import EXEMPT, METHOD_BUCKETS, STREAMS, RateLimits
from holo.session.records import Pose, Ray
from holo.testing import TestServer
from holo.testing.clients import InstrumentedSessionClient
from holo.testing.simulate import SimulationConfig, simulate
from holo.v1 import asset_pb2, asset_pb2_grpc, common_pb2, session_pb2, session_pb2_grpc

KIB = 1 << 10
LIMITS = RateLimits(
    join_per_s=2,
    join_burst=6,
    intent_per_s=2,
    intent_burst=3,
    ephemeral_per_s=5,
    ephemeral_burst=5,
    upload_bytes_per_s=256 * KIB,
    upload_bytes_burst=256 * KIB,
    streams=4,
)
POSE = Pose((0.0, 1.6, 0.0), (0.0, 0.0, 0.0, 1.0))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServer]:
    with TestServer(tmp_path_factory.mktemp("limits"), rate_limits=LIMITS) as running:
        yield running


@pytest.fixture
def case(request: pytest.FixtureRequest) -> str:
    return f"case-{request.node.name[5:40]}".replace("_", "-")


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 60))


#: These tests watch the server refuse: their clients do not wait out a refusal (the SDK's
#: default does, test_the_sdk_waits_out_a_refusal_as_told).
NO_WAIT = dataclasses.replace(SESSION_RETRY, max_rate_wait_s=0.0)


def client(
    server: TestServer, role: str, subject: str, case: str, retry: RetryPolicy = NO_WAIT
) -> InstrumentedSessionClient:
    return InstrumentedSessionClient(
        server.address,
        token=server.token(role, case, subject=subject),
        insecure=True,
        display_name=subject,
        retry=retry,
    )


async def presenter_session(server: TestServer, case: str) -> tuple[Any, str]:
    presenter = client(server, "presenter", f"{case}-surgeon", case)
    info = await presenter.create_session()
    await presenter.join(info.session_id.value)
    return presenter, info.session_id.value


def one_line_refusal(err: ClientError, limit: str) -> None:
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED, err
    message = str(err)
    assert "\n" not in message and limit in message and "retry" in message, message


def test_every_session_method_is_limited_or_exempt_on_purpose() -> None:
    """A new SessionService method must be put in a bucket or declared exempt."""
    session_methods = {m for m in METHOD_ROLES if m.startswith("/holo.v1.SessionService/")}
    assert session_methods == (set(METHOD_BUCKETS) | EXEMPT) & session_methods
    assert not set(METHOD_BUCKETS) & EXEMPT
    assert set(METHOD_BUCKETS) | STREAMS <= set(METHOD_ROLES)


def test_settings_are_parsed_like_session_limits() -> None:
    changed = RateLimits().replaced(["intent_per_s=40", "streams=1000", "join_burst=0"])
    assert (changed.intent_per_s, changed.streams, changed.join_burst) == (40, 1000, 0)
    for bad, words in (("bogus=1", "not a rate limit"), ("join_per_s=x", "not a number")):
        with pytest.raises(Exception, match=words):
            RateLimits().replaced([bad])
    with pytest.raises(Exception, match=r"0 \(off\) or positive"):
        RateLimits().replaced(["ephemeral_per_s=-1"])


def test_ephemeral_over_the_limit_is_refused_for_that_subject_only_and_refills(
    server: TestServer, case: str
) -> None:
    async def body() -> None:
        presenter, sid = await presenter_session(server, case)
        expert = client(server, "expert", f"{case}-expert", case)
        await expert.join(sid)
        for _ in range(5):  # the burst
            await presenter.head_pose(POSE)
        with pytest.raises(ClientError) as err:
            await presenter.head_pose(POSE)
        one_line_refusal(err.value, "ephemeral_per_s")
        # Another subject's bucket is its own.
        for _ in range(5):
            await expert.pointer(Ray((0.0, 1.6, 0.0), (0.0, 0.0, -1.0)))
        await asyncio.sleep(0.25)  # 5 a second: one more token
        await presenter.head_pose(POSE)
        for c in (presenter, expert):
            await c.close()

    run(body)


def test_the_refusal_carries_when_to_retry_in_its_trailers(server: TestServer, case: str) -> None:
    async def body() -> None:
        presenter, sid = await presenter_session(server, case)
        token = server.token("presenter", case, subject=f"{case}-surgeon")
        request = session_pb2.HeadPoseRequest(
            session_id=common_pb2.SessionId(value=sid),
            participant_id=common_pb2.ParticipantId(value=presenter.participant_id),
        )
        request.head_pose.CopyFrom(presenter_pose_message())
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = session_pb2_grpc.SessionServiceStub(channel)
            metadata = (("authorization", f"Bearer {token}"),)
            for _ in range(5):
                await stub.UpdateHeadPose(request, metadata=metadata)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.UpdateHeadPose(request, metadata=metadata)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(err.value.trailing_metadata() or ())
        retry_ms = int(trailers["holo-retry-after-ms"])
        assert 0 < retry_ms <= 200  # one token at 5 a second
        await presenter.close()

    run(body)


def test_the_sdk_waits_out_a_refusal_as_told(server: TestServer, case: str) -> None:
    """With the SDK's default policy, intents past the burst (3, then 2 a second) are sent
    again once the server's named wait has passed: all succeed, each appended once
    (intent ids), and the ones past the burst took about the refill time. Pointer values
    are not waited for (the next one replaces them): refused at once."""

    async def body() -> None:
        presenter, sid = await presenter_session(server, case)
        expert = client(server, "expert", f"{case}-expert", case, retry=SESSION_RETRY)
        await expert.join(sid)
        started = time.monotonic()
        seqs = [await expert.request_control() for _ in range(5)]
        took = time.monotonic() - started
        assert took >= 0.8, took  # two intents past the burst of 3 at 2 a second
        # Five events in a row, none appended twice (a retried intent keeps its id).
        assert seqs == list(range(seqs[0], seqs[0] + 5))
        await presenter.wait_seq(seqs[-1])
        assert presenter.state.seq == seqs[-1]
        for _ in range(5):  # the ephemeral burst
            await expert.pointer(Ray((0.0, 1.5, 0.0), (0.0, 0.0, -1.0)))
        started = time.monotonic()
        with pytest.raises(ClientError) as err:
            await expert.pointer(Ray((0.0, 1.5, 0.0), (0.0, 0.0, -1.0)))
        assert time.monotonic() - started < 0.15
        one_line_refusal(err.value, "ephemeral_per_s")
        for c in (presenter, expert):
            await c.close()

    run(body)


def test_retry_after_reads_only_rate_limit_refusals() -> None:
    policy = RetryPolicy()

    class Refusal(grpc.RpcError):
        def __init__(self, code: grpc.StatusCode, trailers: tuple[tuple[str, str], ...]) -> None:
            self._code, self._trailers = code, trailers

        def code(self) -> grpc.StatusCode:
            return self._code

        def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
            return self._trailers

    limited = Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, (("holo-retry-after-ms", "250"),))
    assert retry_after_s(limited) == 0.25 and policy.wait_s(limited, 1) == 0.25
    too_long = Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, (("holo-retry-after-ms", "9000"),))
    assert policy.wait_s(too_long, 1) is None  # over max_rate_wait_s: the caller hears it
    size = Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, ())
    assert retry_after_s(size) is None and policy.wait_s(size, 1) is None
    down = Refusal(grpc.StatusCode.UNAVAILABLE, (("holo-retry-after-ms", "250"),))
    assert retry_after_s(down) is None and policy.wait_s(down, 1) == policy.delay_s(1)
    assert policy.wait_s(limited, policy.attempts + 1) is None  # refused again and again


def presenter_pose_message() -> Any:
    from holo.wire.common import pose_message

    return pose_message(POSE)


def test_intents_over_the_limit_are_refused_and_not_appended(server: TestServer, case: str) -> None:
    async def body() -> None:
        presenter, sid = await presenter_session(server, case)
        expert = client(server, "expert", f"{case}-expert", case)
        await expert.join(sid)
        seqs = [await expert.request_control() for _ in range(3)]  # the burst of 3
        with pytest.raises(ClientError) as err:
            await expert.request_control()
        one_line_refusal(err.value, "intent_per_s")
        await presenter.wait_seq(seqs[-1])
        assert presenter.state.seq == seqs[-1]  # the refused one reached nobody
        other = client(server, "expert", f"{case}-other", case)
        await other.join(sid)
        await other.request_control()  # its own bucket
        await asyncio.sleep(0.55)  # 2 a second: one more token
        await expert.request_control()
        for c in (presenter, expert, other):
            await c.close()

    run(body)


def test_joins_over_the_limit_are_refused(server: TestServer, case: str) -> None:
    async def body() -> None:
        presenter, sid = await presenter_session(server, case)
        token = server.token("observer", case, subject=f"{case}-looper")
        request = session_pb2.JoinRequest(session_id=common_pb2.SessionId(value=sid))
        metadata = (("authorization", f"Bearer {token}"),)
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = session_pb2_grpc.SessionServiceStub(channel)
            for _ in range(6):  # the burst, one stream at a time
                call = stub.Join(request, metadata=metadata)
                await call.read()
                call.cancel()
                await asyncio.sleep(0.05)  # the server sees the stream end
            call = stub.Join(request, metadata=metadata)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call.read()
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "join_per_s" in (err.value.details() or "")
        observer = client(server, "observer", f"{case}-student", case)
        await observer.join(sid)  # another subject joins
        for c in (presenter, observer):
            await c.close()

    run(body)


def test_open_streams_are_capped_per_subject(server: TestServer, case: str) -> None:
    assert server.running is not None and server.running.limiter is not None
    limiter = server.running.limiter
    subject = f"{case}-crowd"

    async def body() -> None:
        presenter, sid = await presenter_session(server, case)
        token = server.token("observer", case, subject=subject)
        request = session_pb2.JoinRequest(session_id=common_pb2.SessionId(value=sid))
        metadata = (("authorization", f"Bearer {token}"),)
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = session_pb2_grpc.SessionServiceStub(channel)
            calls = [stub.Join(request, metadata=metadata) for _ in range(4)]
            for call in calls:
                await call.read()
            assert limiter.open_streams(subject) == 4
            refused = stub.Join(request, metadata=metadata)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await refused.read()
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "open streams" in (err.value.details() or "")
            other = client(server, "observer", f"{case}-other", case)
            await other.join(sid)  # another subject is not affected
            calls.pop().cancel()
            deadline = time.monotonic() + 5
            while limiter.open_streams(subject) > 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            again = stub.Join(request, metadata=metadata)
            await again.read()  # room again
            for call in (*calls, again):
                call.cancel()
            while limiter.open_streams(subject) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert limiter.open_streams(subject) == 0  # every stream that ended gave back
        for c in (presenter, other):
            await c.close()

    run(body)


def test_uploads_are_throttled_not_refused_and_a_hopeless_wait_is_refused(
    tmp_path: Path,
) -> None:
    """1 MiB a second: a 3 MiB upload (3 chunks of 1 MiB) goes through, taking at least
    the 2 s its bytes beyond the burst need; at 1 KiB a second a second chunk would wait
    far beyond MAX_UPLOAD_WAIT_S and is refused."""
    mib = 1 << 20
    limits = RateLimits(upload_bytes_per_s=mib, upload_bytes_burst=mib)
    with TestServer(tmp_path / "data", rate_limits=limits) as throttled:
        data = bytes(range(256)) * 12 * KIB  # 3 MiB
        with HoloClient(
            throttled.address, token=throttled.token("radiologist", subject="r1"), insecure=True
        ) as uploader:
            started = time.monotonic()
            status = uploader.upload_bytes(data, "big.bin")
            took = time.monotonic() - started
        assert status.complete and status.offset == len(data)
        assert took >= (len(data) - mib) / mib * 0.95, took
    slow = RateLimits(upload_bytes_per_s=1 * KIB, upload_bytes_burst=1 * KIB)
    with TestServer(tmp_path / "slow", rate_limits=slow) as hopeless:
        token = hopeless.token("radiologist", subject="r2")
        metadata = (("authorization", f"Bearer {token}"),)
        chunk = b"x" * (64 * KIB)
        with grpc.insecure_channel(hopeless.address) as channel:
            stub = asset_pb2_grpc.UploadServiceStub(channel)
            status = stub.StartUpload(
                asset_pb2.StartUploadRequest(
                    name="a.bin", size_bytes=2 * len(chunk), sha256=_sha(chunk * 2)
                ),
                metadata=metadata,
            )
            status = stub.UploadChunk(
                asset_pb2.UploadChunkRequest(upload_id=status.upload_id, offset=0, data=chunk),
                metadata=metadata,
            )
            with pytest.raises(grpc.RpcError) as err:
                stub.UploadChunk(
                    asset_pb2.UploadChunkRequest(
                        upload_id=status.upload_id, offset=len(chunk), data=chunk
                    ),
                    metadata=metadata,
                )
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        assert "upload_bytes_per_s" in (err.value.details() or "")  # type: ignore[attr-defined]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_defaults_cover_what_clients_send() -> None:
    """The rates the clients are written to send, per subject, against the defaults."""
    limits = RateLimits()
    page = 30 + 30 + 20  # holo/web/src: head pose and drag at 30 Hz, pointer at 20 Hz
    headset = 2 * 90  # a native headset sending head pose and drag every frame at 90 Hz
    simulator = 2 * 60 + 2 * 30  # its presenter at 60 Hz, two experts at 30 Hz, one token
    assert max(page + headset, simulator) <= limits.ephemeral_per_s
    assert limits.join_burst >= 100 and limits.streams >= 100  # the simulator's crowd
    assert limits.intent_per_s >= 1 + 1 / 3 + 2 / 5  # commits, notes, strokes
    assert limits.intent_burst >= 256  # remove every annotation at once
    assert limits.upload_bytes_per_s >= 125_000_000  # gigabit Ethernet, in bytes a second


def test_the_defaults_do_not_refuse_the_simulator(tmp_path: Path) -> None:
    """``holo simulate``'s presenter at 60 Hz, two experts and a few observers, every role
    on one token each, against a server with the default limits: nothing refused."""
    with TestServer(tmp_path / "data") as plain:
        tokens = {
            role: plain.token(role, "case-sim", subject=f"sim-{role}")
            for role in ("presenter", "expert", "observer")
        }
        config = SimulationConfig(
            servers=[plain.address],
            tokens=tokens,
            experts=2,
            observers=4,
            rate_hz=60.0,
            seconds=2.0,
            insecure=True,
            observers_per_process=4,
        )
        report = asyncio.run(asyncio.wait_for(simulate(config), 120))
    assert report["intents_refused"] == 0, report["refusals"]
    assert report["events_lost"] == 0
