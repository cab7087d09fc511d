"""The bounds of session state: no participant can grow a session past what a headset can
receive. A real server on port 0, SDK clients and raw stubs with gRPC's default limits
(4 MiB a message), the way a headset connects.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from holo.client import ClientError
from holo.client.session import SessionClient
from holo.errors import InvalidRequestError
from holo.server.ratelimit import RateLimits
from holo.server.session_service import CLIENT_RECEIVE_BYTES, check_limits
from holo.session import HubConfig
from holo.session.limits import SessionLimits
from holo.session.records import Pose
from holo.testing import TestServer
from holo.v1 import common_pb2, session_pb2, session_pb2_grpc
from holo.wire.session import snapshot_message, worst_snapshot_bytes

LIMITS = SessionLimits()
WIDE = "\U0001f9e0"  # four bytes in UTF-8: the longest a character can be on the wire
POSE = Pose((0.1, 1.2, -0.4), (0.0, 0.0, 0.0, 1.0))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServer]:
    # Presence timeouts beyond a test's length: only what the test does changes the state.
    config = HubConfig(away_after_s=600, remove_after_s=1200)
    # Filling a session to every bound takes hundreds of intents at once: the per-user
    # intent limit is off here (test_rate_limits.py tests it).
    limits = RateLimits().replaced(["intent_per_s=0", "intent_burst=0"])
    with TestServer(
        tmp_path_factory.mktemp("limits"), session=config, rate_limits=limits
    ) as running:
        yield running


@pytest.fixture
def case(request: pytest.FixtureRequest) -> str:
    return f"case-{request.node.name[5:40]}".replace("_", "-")


def client(server: TestServer, role: str, case: str, subject: str) -> SessionClient:
    token = server.token(role, case, subject=subject)
    return SessionClient(server.address, token=token, insecure=True, display_name=subject)


async def _join_raw(
    server: TestServer, token: str, session_id: str, **fields: object
) -> list[session_pb2.SessionMessage]:
    """Join with a plain channel (gRPC's default 4 MiB receive limit) and read the first
    message, or every message until the stream goes quiet for 2 s when ``resume`` is set."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = session_pb2_grpc.SessionServiceStub(channel)
        request = session_pb2.JoinRequest(
            session_id=common_pb2.SessionId(value=session_id), **fields
        )
        call = stub.Join(request, metadata=(("authorization", f"Bearer {token}"),))
        messages = [await call.read()]
        if "resume_from_seq" in fields:
            while True:
                try:
                    message = await asyncio.wait_for(call.read(), 2.0)
                except TimeoutError:
                    break
                messages.append(message)
        call.cancel()
        return messages


def test_the_probe_that_locked_a_session_is_refused(server: TestServer, case: str) -> None:
    """Issue 14, point 1: ten Telestrate calls of ~1 MB (an 800,000-character track id)
    made the snapshot 10-12 MB, and nobody could join any more."""

    async def body() -> None:
        presenter = client(server, "presenter", case, "surgeon")
        info = await presenter.create_session()
        session_id = info.session_id.value
        await presenter.join(session_id)
        expert = client(server, "expert", case, "dr-remote")
        await expert.join(session_id)
        points = [(0.5, 0.5)] * 10_000
        with pytest.raises(ClientError, match=r"INVALID_ARGUMENT: telestration.track_id "):
            await expert.telestrate("t0", "t" * 800_000, 1, points)
        with pytest.raises(
            ClientError,
            match=r"INVALID_ARGUMENT: telestration.telestration_id: an id of 1 to 128 characters "
            r"of A-Z a-z 0-9 . _ - is needed \(got 3 characters\)",
        ):
            await expert.telestrate("t 0", "trk-1", 1, points)
        # Short ids and 10,000 points each: the session's 60,000 points run out, not the
        # headsets' 4 MiB.
        for i in range(6):
            await expert.telestrate(f"t{i}", "trk-1", 1, points)
        with pytest.raises(ClientError, match=r"RESOURCE_EXHAUSTED: .* of at most 60000 points"):
            await expert.telestrate("t6", "trk-1", 1, points)
        (accepted,) = await _join_raw(server, server.token("observer", case), session_id)
        assert len(accepted.accepted.snapshot.telestrations) == 6
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _join_raw(
                server,
                server.token("observer", case, subject="o2"),
                session_id,
                display_name="n" * 101,
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (
            refused.value.details()
            == "display_name has at most 100 characters, not 101; shorten it"
        )
        for c in (presenter, expert):
            await c.close()

    asyncio.run(asyncio.wait_for(body(), 120))


def test_a_session_full_to_every_bound_can_still_be_joined(
    server: TestServer, knee_glb: Path, case: str
) -> None:
    """Fill every collection to its bound with the largest values allowed; a fresh headset
    with gRPC's default limits still joins, and every bound refuses one more."""
    models = [server.publish_model(case, knee_glb) for _ in range(LIMITS.max_models + 1)]

    async def body() -> None:
        presenter = client(server, "presenter", case, "surgeon")
        info = await presenter.create_session()
        session_id = info.session_id.value
        await presenter.join(session_id)
        name = WIDE * LIMITS.max_display_name_chars
        # Participants: observers with the longest display names, one subject each, up to
        # the seats kept for presenters and experts; then experts, who ask for control.
        observers = LIMITS.max_participants - LIMITS.guide_seats
        experts = LIMITS.guide_seats - 1  # the presenter holds one guide seat
        gate = asyncio.Semaphore(32)

        async def join(role: str, k: int, request_control: bool = False) -> None:
            async with gate:
                one = SessionClient(
                    server.address,
                    token=server.token(role, case, subject=f"{role}-{k}"),
                    insecure=True,
                    display_name=name,
                )
                await one.join(session_id)
                if request_control:
                    await one.request_control()
                await one.close()  # the participant stays (presence keeps it for 20 min)

        await asyncio.gather(*(join("observer", k) for k in range(observers - 1)))
        await asyncio.gather(*(join("expert", k, True) for k in range(experts)))
        # Models, annotations and telestrations with the longest ids and texts.
        for model_id in models[: LIMITS.max_models]:
            await presenter.load_model(model_id, POSE)
        with pytest.raises(ClientError, match=r"RESOURCE_EXHAUSTED: this session holds 32 models"):
            await presenter.load_model(models[-1], POSE)
        ids = (f"{k:0128d}" for k in itertools.count())
        text = WIDE * LIMITS.max_label_chars
        labels = LIMITS.max_annotations - 6
        for _ in range(labels):
            await presenter.add_label(next(ids), models[0], [0.1, 0.2, 0.3], text)
        track = "k" * LIMITS.max_id_chars
        for _ in range(LIMITS.max_telestrations):
            await presenter.telestrate(next(ids), track, 2**62, [(0.1, 0.2), (0.3, 0.4)], 0xABCDEF)
        # The rest of the points in six strokes (3-D points: the largest on the wire).
        left = LIMITS.max_points - labels - 2 * LIMITS.max_telestrations
        for k in range(6):
            count = min(LIMITS.max_stroke_points, left - (5 - k) * 2)
            left -= count
            stroke = [(0.1 + 1e-6 * j, 0.2, 0.3) for j in range(count)]
            await presenter.add_stroke(next(ids), models[0], stroke)
        assert left == 0
        # Every bound refuses one more, with one line naming it.
        with pytest.raises(
            ClientError, match=r"RESOURCE_EXHAUSTED: this session holds 256 annotations"
        ):
            await presenter.add_marker("one-more", models[0], [0, 0, 0])
        with pytest.raises(
            ClientError, match=r"RESOURCE_EXHAUSTED: this session holds 512 telestrations"
        ):
            await presenter.telestrate("one-more", "trk-1", 1, [(0, 0), (1, 1)])
        last_observer = server.token("observer", case, subject="observer-last")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _join_raw(server, last_observer, session_id)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.details().startswith("this session is full for a observer: 999 ")
        # One guide seat is left: the surgeon's second headset still gets in, with gRPC's
        # default receive limit.
        state = server.call(_state(server, session_id))
        assert len(state.participants) == LIMITS.max_participants - 1
        snapshot = snapshot_message(state, 0).ByteSize()
        assert snapshot <= worst_snapshot_bytes(LIMITS) < CLIENT_RECEIVE_BYTES
        assert snapshot > 0.8 * worst_snapshot_bytes(LIMITS)  # the bound is not loose
        token = server.token("presenter", case, subject="surgeon-2nd-headset")
        (accepted,) = await _join_raw(server, token, session_id, display_name=name)
        joined = accepted.accepted.snapshot
        # As of just before it joined: its own "joined" event follows the snapshot.
        assert len(joined.participants) == LIMITS.max_participants - 1
        assert len(joined.annotations) == LIMITS.max_annotations
        assert len(joined.telestrations) == LIMITS.max_telestrations
        assert len(joined.models) == LIMITS.max_models
        await presenter.close()

    asyncio.run(asyncio.wait_for(body(), 300))


async def _state(server: TestServer, session_id: str) -> object:
    assert server.running is not None
    return (await server.running.hub.get(session_id)).state.copy()


def test_events_a_resuming_headset_missed_come_in_messages_it_can_receive(
    server: TestServer, case: str
) -> None:
    """64 strokes of 10,000 points (each removed again, so the bounds hold) are 18 MB of
    events: a headset resuming from before them gets them in messages under 4 MiB."""

    async def body() -> None:
        presenter = client(server, "presenter", case, "surgeon")
        info = await presenter.create_session()
        session_id = info.session_id.value
        await presenter.join(session_id)
        expert = client(server, "expert", case, "dr-remote")
        await expert.join(session_id)
        away_at = expert.state.seq
        points = [(0.1 + 1e-6 * j, 0.2) for j in range(LIMITS.max_stroke_points)]
        last = 0
        for i in range(64):
            await presenter.telestrate(f"s{i}", "trk-1", 1, points)
            last = await presenter.remove_annotation(f"s{i}")
        token = server.token("expert", case, subject="dr-remote")
        messages = await _join_raw(
            server,
            token,
            session_id,
            participant_id=common_pb2.ParticipantId(value=expert.participant_id),
            resume_from_seq=away_at,
        )
        seqs = []
        for m in messages[1:]:
            assert m.ByteSize() < CLIENT_RECEIVE_BYTES
            seqs += [e.seq for e in m.events.events] if m.HasField("events") else [m.event.seq]
        assert seqs == list(range(away_at + 1, last + 1))
        for c in (presenter, expert):
            await c.close()

    asyncio.run(asyncio.wait_for(body(), 120))


def test_limits_whose_snapshot_would_not_fit_are_refused_at_start() -> None:
    check_limits(LIMITS)
    with pytest.raises(
        InvalidRequestError, match=r"a Join message of \d+ bytes, more than the 4194304"
    ):
        check_limits(SessionLimits(max_points=200_000))
    with pytest.raises(InvalidRequestError, match="max_stroke_points"):
        check_limits(SessionLimits(max_stroke_points=200_000))


def test_holo_serve_takes_session_limits_and_refuses_ones_that_would_not_fit(
    tmp_path: Path,
) -> None:
    import re
    import subprocess
    import sys

    from holo.auth import load_secret, mint_token

    serve = [sys.executable, "-m", "holo.cli", "serve", "--data", str(tmp_path / "data")]
    serve += ["--listen", "127.0.0.1:0", "--insecure"]
    for setting, error in [
        ("max_points=200000", r"a Join message of \d+ bytes, more than the 4194304"),
        ("max_pointz=3", r"'max_pointz' is not a session limit; use NAME=VALUE"),
        ("max_points=many", r"max_points: 'many' is not a whole number"),
    ]:
        refused = subprocess.run(
            [*serve, "--session-limit", setting], capture_output=True, text=True, timeout=60
        )
        assert refused.returncode == 2
        assert re.fullmatch(f"holo: error: .*{error}.*\n", refused.stderr), refused.stderr
    process = subprocess.Popen(
        [*serve, "--session-limit", "max_telestrations=1"], stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        port = 0
        for line in process.stderr:
            found = re.search(r"serving on 127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
                break
        secret = load_secret(tmp_path / "data")

        async def body() -> None:
            token = mint_token(
                secret, role="presenter", case_id="case-1", subject="surgeon", ttl_s=600
            )
            presenter = SessionClient(f"127.0.0.1:{port}", token=token, insecure=True)
            info = await presenter.create_session()
            await presenter.join(info.session_id.value)
            await presenter.telestrate("t1", "trk-1", 1, [(0, 0), (1, 1)])
            with pytest.raises(ClientError, match="RESOURCE_EXHAUSTED: this session holds 1 tel"):
                await presenter.telestrate("t2", "trk-1", 1, [(0, 0), (1, 1)])
            await presenter.close()

        asyncio.run(asyncio.wait_for(body(), 60))
    finally:
        process.terminate()
        process.wait(30)
