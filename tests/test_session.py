"""Shared sessions on one node: a real server on port 0, real gRPC clients (the SDK).

Late join, reconnect-resume, role denials, control hand-over, presence, annotations, the
resync of a stalled client, and the audit log.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from holo.client import ClientError
from holo.client.session import SessionClient
from holo.server.ratelimit import RateLimits
from holo.session import HubConfig
from holo.session.archive import read_archive
from holo.session.records import Annotation, Pose, Ray
from holo.session.state import SessionState
from holo.testing import TestServer
from holo.testing.clients import InstrumentedSessionClient
from holo.v1 import common_pb2, session_pb2, session_pb2_grpc
from holo.wire.common import pose_message

POSE_A = Pose((0.1, 1.2, -0.4), (0.0, 0.0, 0.0, 1.0))
POSE_B = Pose((0.3, 1.0, -0.5), (0.0, 0.70710678, 0.0, 0.70710678))
FAST = HubConfig(
    heartbeat_interval_s=0.2,
    away_after_s=0.8,
    remove_after_s=1.6,
    sweep_interval_s=0.1,
    max_backlog=64,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServer]:
    # These tests send intents in bursts of hundreds (a stalled reader needs far more
    # events than buffers hold): the per-user intent limit is off here and tested in
    # test_rate_limits.py.
    limits = RateLimits().replaced(["intent_per_s=0", "intent_burst=0"])
    with TestServer(
        tmp_path_factory.mktemp("sessions"), session=FAST, rate_limits=limits
    ) as running:
        yield running


@pytest.fixture
def case(request: pytest.FixtureRequest) -> str:
    """A case of its own per test (a case has one open session)."""
    return f"case-{request.node.name[5:40]}".replace("_", "-")


@pytest.fixture
def model_id(server: TestServer, knee_glb: Path, case: str) -> str:
    """The sample knee as a model of the test's case."""
    return server.publish_model(case, knee_glb)


def participant(
    server: TestServer, role: str, name: str = "", *, case: str, **kw: Any
) -> InstrumentedSessionClient:
    return InstrumentedSessionClient(
        server.address,
        token=server.token(role, case, subject=name or role),
        insecure=True,
        display_name=name or role,
        **kw,
    )


def heartbeat_times(client: SessionClient) -> list[float]:
    """The moments (time.monotonic) ``client`` sends a heartbeat from now on."""
    times: list[float] = []
    real = client.heartbeat

    async def counted() -> int:
        times.append(time.monotonic())
        return await real()

    client.heartbeat = counted  # type: ignore[method-assign]
    return times


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 60))


def server_state(server: TestServer, session_id: str) -> SessionState:
    assert server.running is not None
    hub = server.running.hub
    return server.call(hub.get(session_id)).state.copy()  # type: ignore[no-any-return]


async def _session(server: TestServer, case: str) -> tuple[SessionClient, str]:
    presenter = participant(server, "presenter", "surgeon", case=case)
    info = await presenter.create_session()
    await presenter.join(info.session_id.value)
    return presenter, info.session_id.value


def test_late_joiner_gets_the_snapshot_then_every_event(
    server: TestServer, model_id: str, case: str
) -> None:
    async def body() -> None:
        presenter, sid = await _session(server, case)
        expert = participant(server, "expert", "dr-remote", case=case)
        await expert.join(sid)
        await presenter.load_model(model_id, POSE_A)
        await expert.wait_seq(presenter.state.seq)
        await expert.add_marker("m1", model_id, [0.0, 0.05, 0.01])
        seq = await presenter.commit_anchor(model_id, POSE_B)
        late = participant(server, "observer", "student", case=case)
        await late.join(sid)
        assert late.state.models[model_id].anchor_pose.position == POSE_B.position
        assert "m1" in late.state.annotations
        assert late.state.seq >= seq
        final = await expert.add_label("l1", model_id, [0.0, 0.1, 0.0], "tibial plateau")
        for c in (presenter, expert, late):
            await c.wait_seq(final)
            assert not c.errors
        assert (
            presenter.state.public_dict()
            == late.state.public_dict()
            == server_state(server, sid).public_dict()
        )
        for c in (presenter, expert, late):
            await c.close()

    run(body)


def test_reconnect_resumes_without_loss_or_repeats(
    server: TestServer, model_id: str, case: str
) -> None:
    async def body() -> None:
        presenter, sid = await _session(server, case)
        observer = participant(server, "observer", "watcher", case=case)
        await observer.join(sid)
        await presenter.load_model(model_id, POSE_A)
        await observer.wait_seq(presenter.state.seq)
        pid, before = observer.participant_id, observer.state.seq
        # Drop the observer's connection while the presenter keeps going.
        assert observer._channel is not None
        await observer._channel.close()
        seqs = [
            await presenter.commit_anchor(model_id, POSE_B if i % 2 else POSE_A) for i in range(5)
        ]
        await observer.wait_seq(seqs[-1], timeout_s=20)
        assert observer.participant_id == pid  # the same participant, not a new join
        assert observer.reconnects >= 1
        assert observer.seqs == sorted(set(observer.seqs))  # no repeats
        applied = [s for s in observer.seqs if s > before]
        assert applied == list(range(before + 1, observer.state.seq + 1))  # no gaps
        assert observer.state.public_dict() == server_state(server, sid).public_dict()
        await observer.close()
        await presenter.close()

    run(body)


def test_roles_are_enforced(server: TestServer, model_id: str, case: str) -> None:
    async def body() -> None:
        presenter, sid = await _session(server, case)
        observer = participant(server, "observer", "o1", case=case)
        expert = participant(server, "expert", "e1", case=case)
        await observer.join(sid)
        await expert.join(sid)
        await presenter.load_model(model_id, POSE_A)
        denied = [
            observer.add_marker("x", model_id, [0, 0, 0]),
            observer.commit_anchor(model_id, POSE_B),
            observer.pointer(Ray((0, 1.5, 0), (0, 0, -1))),
            observer.head_pose(POSE_A),
            observer.request_control(),
            expert.commit_anchor(model_id, POSE_B),  # an expert without control
            expert.grant_control(expert.participant_id),
        ]
        for call in denied:
            with pytest.raises(ClientError) as err:
                await call
            assert err.value.code == grpc.StatusCode.PERMISSION_DENIED, err.value
        assert await observer.heartbeat() == 0  # heartbeat and leave stay open to observers
        other_case = participant(server, "observer", "o2", case="case-other")
        with pytest.raises(ClientError) as err:
            await other_case.join(sid)
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        impostor = participant(server, "observer", "mallory", case=case)
        impostor.session_id, impostor.participant_id = sid, observer.participant_id
        with pytest.raises(ClientError) as err:
            await impostor.heartbeat()
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        for c in (presenter, observer, expert, other_case, impostor):
            await c.close()

    run(body)


def test_control_hand_over(server: TestServer, model_id: str, case: str) -> None:
    async def body() -> None:
        presenter, sid = await _session(server, case)
        expert = participant(server, "expert", "guide", case=case)
        await expert.join(sid)
        await presenter.load_model(model_id, POSE_A)
        assert presenter.state.controller == presenter.participant_id
        await expert.request_control()
        await presenter.wait_for(lambda c: expert.participant_id in c.state.control_requests)
        await presenter.grant_control(expert.participant_id)
        seq = await expert.commit_anchor(model_id, POSE_B)  # now allowed
        await presenter.wait_seq(seq)
        assert presenter.state.controller == expert.participant_id
        assert presenter.state.models[model_id].anchor_pose.rotation[1] == pytest.approx(0.70710678)
        with pytest.raises(ClientError) as err:
            await presenter.commit_anchor(model_id, POSE_A)  # the presenter gave control away
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        await presenter.revoke_control(expert.participant_id)
        await presenter.wait_for(lambda c: c.state.controller == presenter.participant_id)
        with pytest.raises(ClientError):
            await expert.commit_anchor(model_id, POSE_A)
        await expert.close()
        await presenter.close()

    run(body)


def test_presence_marks_away_then_removes(server: TestServer, case: str) -> None:
    async def body() -> None:
        presenter, sid = await _session(server, case)
        quiet = participant(server, "expert", "quiet", case=case)
        await quiet.join(sid)
        pid = quiet.participant_id
        await quiet.close()  # no more heartbeats, no Leave
        await presenter.wait_for(
            lambda c: pid in c.state.participants and not c.state.participants[pid].present, 5
        )
        await presenter.wait_for(lambda c: pid not in c.state.participants, 5)
        leaving = participant(server, "observer", "polite", case=case)
        await leaving.join(sid)
        lid = leaving.participant_id
        await presenter.wait_for(lambda c: lid in c.state.participants)
        await leaving.leave()
        await presenter.wait_for(lambda c: lid not in c.state.participants, 2)
        assert presenter.state.participants[presenter.participant_id].present  # heartbeating
        await presenter.close()

    run(body)


def test_heartbeats_of_clients_joined_together_drift_apart(server: TestServer, case: str) -> None:
    """Heartbeats are jittered (0.8-1.0 of the server's interval): clients a busy node
    answered together do not stay in step and hit it together every interval after."""

    async def body() -> None:
        presenter, sid = await _session(server, case)
        crowd = [participant(server, "observer", f"watcher-{i}", case=case) for i in range(2)]
        beats = [heartbeat_times(client) for client in crowd]
        await asyncio.gather(*(c.join(sid) for c in crowd))
        await asyncio.sleep(2.5)
        interval = FAST.heartbeat_interval_s
        gaps = []
        for times in beats:
            assert len(times) >= 8, times  # ~12 expected in 2.5 s
            gaps += [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 0.8 * interval - 0.005, gaps  # never more often than that
        assert max(gaps) <= interval + 0.15, gaps
        assert max(gaps) - min(gaps) > 0.01, gaps  # in step they would all be one interval
        # ... and the two clients' k-th heartbeats are not a fixed time apart
        offsets = [b - a for a, b in zip(*beats, strict=False)]
        assert max(offsets) - min(offsets) > 0.01, offsets
        await asyncio.gather(*(c.close() for c in crowd))
        await presenter.close()

    run(body)


def test_a_flowing_stream_stands_in_for_heartbeats(
    server: TestServer, model_id: str, case: str
) -> None:
    """While its stream flows a client sends no heartbeats (the server counts the stream it
    writes to as a sign of life) and stays present; once the stream is quiet it heartbeats
    again, and stays present past the away timeout."""

    async def body() -> None:
        presenter, sid = await _session(server, case)
        await presenter.load_model(model_id, POSE_A)
        watcher = participant(server, "observer", "watcher", case=case)
        beats = heartbeat_times(watcher)
        await watcher.join(sid)
        pid = watcher.participant_id
        await asyncio.sleep(3 * FAST.heartbeat_interval_s)  # the join's own events go by
        beats.clear()
        away = []  # moments the watcher's own state had it away
        dragging_until = time.monotonic() + 5 * FAST.away_after_s
        n = 0
        while time.monotonic() < dragging_until:  # 50 Hz of drags: the stream flows
            n += 1
            await presenter.drag(model_id, POSE_B if n % 2 else POSE_A)
            await asyncio.sleep(0.02)
            if not watcher.state.participants[pid].present:
                away.append(time.monotonic())
        assert beats == []  # four seconds, twenty intervals: not one heartbeat needed
        assert away == []
        quiet_until = time.monotonic() + 2 * FAST.away_after_s
        while time.monotonic() < quiet_until:  # quiet: heartbeats again, still present
            await asyncio.sleep(0.02)
            if not watcher.state.participants[pid].present:
                away.append(time.monotonic())
        assert len(beats) >= 4
        assert away == []
        assert presenter.state.participants[pid].present
        await watcher.close()
        await presenter.close()

    run(body)


def test_annotation_lifecycle(server: TestServer, model_id: str, case: str) -> None:
    async def body() -> None:
        presenter, sid = await _session(server, case)
        expert = participant(server, "expert", "annotator", case=case)
        other = participant(server, "expert", "second-expert", case=case)
        await expert.join(sid)
        await other.join(sid)
        await presenter.load_model(model_id, POSE_A)
        await expert.add_stroke("s1", model_id, [[0, 0, 0], [0.01, 0.02, 0.0], [0.02, 0.03, 0.01]])
        await expert.add_marker("m2", model_id, [0.0, 0.0, 0.02])
        with pytest.raises(ClientError) as err:
            await expert.add_marker("m2", model_id, [0, 0, 0])  # the same id twice
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(ClientError) as err:
            await expert.add_stroke("s2", model_id, [[0, 0, 0]])  # a stroke of one point
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(ClientError) as err:
            await other.remove_annotation("s1")  # not its author
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        await expert.remove_annotation("s1")
        seq = await presenter.remove_annotation("m2")  # a presenter may remove any
        await other.wait_seq(seq)
        assert other.state.annotations == {}
        stroke_added = [
            e for e in server.call(_events(server, sid)) if e.kind == "annotation_added"
        ]
        stroke = stroke_added[0].data
        assert isinstance(stroke, Annotation) and stroke.points[1] == (0.01, 0.02, 0.0)
        for c in (presenter, expert, other):
            await c.close()

    run(body)


async def _held_bytes(server: TestServer, sid: str) -> list[int]:
    """What the server holds for each subscriber of the session (read on its own loop)."""
    assert server.running is not None
    return [s.memory_bytes() for s in (await server.running.hub.get(sid)).subscribers]


async def _events(server: TestServer, sid: str) -> list[Any]:
    assert server.running is not None
    return list((await server.running.hub.get(sid)).events)


def test_stalled_client_is_resynced_and_others_are_not(
    server: TestServer, model_id: str, case: str
) -> None:
    async def body() -> None:
        presenter, sid = await _session(server, case)
        healthy = participant(server, "observer", "healthy", case=case)
        # A fixed 64 kB HTTP/2 window (no BDP probing) so the transport cannot soak up the
        # whole test's events, as a slow headset link would not.
        stalled = participant(
            server, "observer", "stalled", case=case, channel_options=[("grpc.http2.bdp_probe", 0)]
        )
        await healthy.join(sid)
        await stalled.join(sid)
        await presenter.load_model(model_id, POSE_A)
        stalled.stall()
        # Far more events than the backlog (64) and the transport's buffers hold: the
        # label's 500 characters make each event about 0.6 kB. Older labels are removed
        # as it goes: a session holds at most 256 annotations (SessionLimits).
        last = 0
        for i in range(1500):
            last = await presenter.add_label(f"n{i}", model_id, [0, 0, 0], "x" * 500)
            if i >= 200:
                last = await presenter.remove_annotation(f"n{i - 200}")
        await healthy.wait_seq(last, 20)
        # While it is still stalled: what the server holds for it is bounded by the
        # backlog (64), not by the 1500 events it has not read.
        held = server.call(_held_bytes(server, sid))
        assert max(held) < 64 * 2000
        stalled.unstall()
        await stalled.wait_seq(last, 20)
        assert stalled.resyncs >= 1 and healthy.resyncs == 0
        assert healthy.seqs == list(range(healthy.seqs[0], last + 1))  # every event, in order
        assert stalled.state.public_dict() == healthy.state.public_dict()
        for c in (presenter, healthy, stalled):
            await c.close()

    run(body)


def test_ephemeral_channels_deliver_the_newest(
    server: TestServer, model_id: str, case: str
) -> None:
    async def body() -> None:
        presenter, sid = await _session(server, case)
        watcher = participant(server, "observer", "eyes", case=case)
        await watcher.join(sid)
        await presenter.load_model(model_id, POSE_A)
        for i in range(30):
            pose = Pose((0.0, 1.0 + i / 100, 0.0), (0.0, 0.0, 0.0, 1.0))
            await presenter.drag(model_id, pose)
        await presenter.pointer(Ray((0, 1.6, 0), (0, -0.2, -1)))
        key = (presenter.participant_id, "drag")
        await watcher.wait_for(
            lambda c: (
                key in c.latest and c.latest[key].value.anchor_pose.position[1]  # type: ignore[union-attr] == pytest.approx(1.29)
            ),
            5,
        )
        await watcher.wait_for(lambda c: (presenter.participant_id, "pointer") in c.latest, 5)
        # Drags are not durable: the committed anchor is unchanged.
        assert watcher.state.models[model_id].anchor_pose.position == POSE_A.position
        await watcher.close()
        await presenter.close()

    run(body)


def test_observers_get_ephemeral_values_at_their_own_pace(
    server: TestServer, model_id: str, case: str
) -> None:
    """Ephemeral values go out in frames: at most one per 1/60 s to the presenter and
    experts, one per 1/15 s to observers (HubConfig), each frame the newest per slot."""
    paces = (FAST.ephemeral_interval_s, FAST.observer_ephemeral_interval_s)
    assert paces == (1 / 60, 1 / 15)  # the defaults: FAST changes neither

    async def frames(stub: Any, request: Any, metadata: Any, into: list[Any]) -> None:
        async for message in stub.Join(request, metadata=metadata):
            if message.WhichOneof("kind") in ("ephemeral", "ephemerals"):
                into.append(message)

    async def body() -> None:
        presenter, sid = await _session(server, case)
        await presenter.load_model(model_id, POSE_A)
        seen: dict[str, list[Any]] = {"expert": [], "observer": []}
        streams = []
        for role, into in seen.items():
            client = participant(server, role, f"{role}-pace", case=case)
            stub = client._connect()
            request = session_pb2.JoinRequest(session_id=common_pb2.SessionId(value=sid))
            streams.append(asyncio.create_task(frames(stub, request, client._metadata, into)))
        await asyncio.sleep(0.5)  # both joined
        started = time.monotonic()
        for i in range(200):  # 200 drags over a second or so
            pose = Pose((0.0, 1.0 + i / 1000, 0.0), (0.0, 0.0, 0.0, 1.0))
            await presenter.drag(model_id, pose)
            await asyncio.sleep(0.005)
        seconds = time.monotonic() - started + 0.1  # + the last frame's wait
        await asyncio.sleep(0.3)
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)

        def last_y(messages: list[Any]) -> float:
            last = messages[-1]
            update = last.ephemeral if last.WhichOneof("kind") == "ephemeral" else None
            update = update or last.ephemerals.updates[-1]
            return float(update.drag.anchor_pose.position.y)

        experts, observers = len(seen["expert"]), len(seen["observer"])
        counts = (experts, observers, seconds)
        assert experts <= 60 * seconds + 2 and observers <= 15 * seconds + 2, counts
        assert observers >= 8 and experts > observers * 1.3, counts
        for messages in seen.values():  # everyone ends with the newest value
            assert last_y(messages) == pytest.approx(1.199)
        await presenter.close()

    run(body)


def test_bad_intents_are_clear_errors(server: TestServer, model_id: str, case: str) -> None:
    async def body() -> None:
        presenter, _ = await _session(server, case)
        zero = Pose((0, 0, 0), (0.0, 0.0, 0.0, 0.0))
        with pytest.raises(ClientError) as err:
            await presenter.load_model(model_id, zero)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "quaternion" in str(err.value)
        with pytest.raises(ClientError) as err:
            await presenter.load_model("mdl_nope", POSE_A)
        assert err.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(ClientError) as err:
            await presenter.commit_anchor(model_id, POSE_A)  # not loaded in this session yet
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        nowhere = participant(server, "observer", "lost", case=case)
        with pytest.raises(ClientError) as err:
            await nowhere.join("ses_missing")
        assert err.value.code == grpc.StatusCode.NOT_FOUND
        await nowhere.close()
        await presenter.close()

    run(body)


def test_audit_log_records_joins_control_and_loads(
    server: TestServer, model_id: str, case: str
) -> None:
    async def body() -> None:
        presenter, sid = await _session(server, case)
        expert = participant(server, "expert", "auditee", case=case)
        await expert.join(sid)
        await presenter.load_model(model_id, POSE_A)
        await expert.request_control()
        await presenter.grant_control(expert.participant_id)
        await expert.leave()
        await presenter.close()
        records = [
            json.loads(line) for line in (server.data / "audit.jsonl").read_text().splitlines()
        ]
        mine = [r for r in records if r.get("session_id") == sid]
        actions = [(r["subject"], r["action"]) for r in mine]
        for expected in [
            ("surgeon", "joined"),
            ("auditee", "joined"),
            ("surgeon", "model_loaded"),
            ("auditee", "control_requested"),
            ("surgeon", "control_granted"),
            ("auditee", "left"),
        ]:
            assert expected in actions, (expected, actions)

    run(body)


def test_an_incompatible_protocol_version_is_refused(server: TestServer, case: str) -> None:
    async def body() -> None:
        presenter, sid = await _session(server, case)
        assert presenter.participant_id  # the SDK's own Capabilities (holo.v1) were accepted
        stub = presenter._connect()  # the client's own channel
        assert isinstance(stub, session_pb2_grpc.SessionServiceStub)
        request = session_pb2.JoinRequest(
            session_id=common_pb2.SessionId(value=sid),
            capabilities=common_pb2.Capabilities(protocol_major=2, software_name="future-headset"),
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.Join(request, metadata=presenter._metadata):
                pass
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "holo.v2" in (err.value.details() or "")
        await presenter.close()

    run(body)


def test_holo_simulate_reports_a_clean_run(
    server: TestServer, model_id: str, case: str, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [
            *(sys.executable, "-m", "holo.cli", "simulate", "--server", server.address),
            *("--case", case, "--data", str(server.data), "--model", model_id, "--insecure"),
            *("--experts", "1", "--observers", "5", "--rate", "20", "--seconds", "2"),
            *("--observers-per-process", "2"),  # three worker processes
            *("--server-pid", str(os.getpid()), "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["clients"] == 7 and report["events_lost"] == 0
    assert report["events_repeated"] == 0 and report["clients_behind"] == 0
    observers = report["roles"]["observer"]
    assert observers["clients"] == 5
    assert observers["events"] >= 5 * 2  # anchor commits every second reach every observer
    assert observers["ephemeral"] > 0 and observers["event_latency_ms"]["p99"] > 0
    assert report["server"]["rss_mb"] > 0 and report["simulator_cpu_percent"] > 0
    assert report["simulator_processes"] == 1 + 3


def test_a_participant_id_cannot_be_taken_over(
    server: TestServer, model_id: str, case: str
) -> None:
    async def body() -> None:
        presenter, sid = await _session(server, case)
        await presenter.load_model(model_id, POSE_A)
        alice = participant(server, "expert", "alice", case=case)
        await alice.join(sid)
        await alice.add_marker("a1", model_id, [0.0, 0.0, 0.0])
        pid = alice.participant_id
        await alice.leave()
        await presenter.wait_for(lambda c: pid not in c.state.participants)
        mallory = participant(server, "expert", "mallory", case=case)
        mallory.participant_id = pid  # claims alice's id after she left
        with pytest.raises(ClientError) as err:
            await mallory.join(sid)
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        invented = participant(server, "expert", "eve", case=case)
        invented.participant_id = "p_made_up"
        with pytest.raises(ClientError) as err:
            await invented.join(sid)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        back = participant(server, "expert", "alice", case=case)  # alice herself may come back
        back.participant_id = pid
        await back.join(sid)
        assert back.participant_id == pid and "a1" in back.state.annotations
        for c in (presenter, mallory, invented, back):
            await c.close()

    run(body)


def test_a_retried_intent_is_applied_once(server: TestServer, model_id: str, case: str) -> None:
    async def body() -> None:
        presenter, sid = await _session(server, case)
        await presenter.load_model(model_id, POSE_A)
        stub = presenter._connect()
        assert isinstance(stub, session_pb2_grpc.SessionServiceStub)
        # The same request twice, as a client does when the first reply was lost.
        request = session_pb2.CommitAnchorRequest(
            session_id=common_pb2.SessionId(value=sid),
            participant_id=common_pb2.ParticipantId(value=presenter.participant_id),
            model_id=common_pb2.ModelId(value=model_id),
            anchor_pose=pose_message(POSE_B),
            intent_id="retry-me",
        )
        first = await stub.CommitAnchor(request, metadata=presenter._metadata)
        again = await stub.CommitAnchor(request, metadata=presenter._metadata)
        assert first.seq == again.seq > 0
        commits = [e for e in server.call(_events(server, sid)) if e.kind == "anchor_committed"]
        assert len(commits) == 1
        request.intent_id = "another"  # a new intent with the same content is a new event
        third = await stub.CommitAnchor(request, metadata=presenter._metadata)
        assert third.seq > again.seq
        await presenter.close()

    run(body)


def test_heartbeat_and_leave_on_another_cases_replay_are_refused(
    server: TestServer, case: str
) -> None:
    """Issue 14, point 8: every session RPC on a replay goes through the one access check."""
    from holo.client.video import VideoClient

    async def body() -> None:
        presenter, sid = await _session(server, case)
        video = VideoClient(server.address, token=server.token("presenter", case), insecure=True)
        await video.start_recording(sid)
        recording = await video.stop_recording(sid)
        replay = await video.open_replay(recording.recording_id.value)
        replay_id = common_pb2.SessionId(value=replay.session_id.value)
        stranger = (("authorization", f"Bearer {server.token('presenter', 'another-case')}"),)
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = session_pb2_grpc.SessionServiceStub(channel)
            calls = {
                "Heartbeat": stub.Heartbeat(
                    session_pb2.HeartbeatRequest(session_id=replay_id), metadata=stranger
                ),
                "Leave": stub.Leave(
                    session_pb2.LeaveRequest(session_id=replay_id), metadata=stranger
                ),
            }
            for name, call in calls.items():
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, name
                assert "belongs to another case" in (refused.value.details() or ""), name
        await video.close()
        await presenter.close()

    run(body)


def test_signs_of_life_go_on_the_bus_once_per_node_and_interval(
    server: TestServer, case: str
) -> None:
    """Issue 14, point 9: every flowing Join stream is a sign of life; the node tells the
    other nodes about all of them in one message per heartbeat interval, not one per stream
    (500 observers were 250 publishes a second)."""
    assert server.running is not None
    bus = server.running.hub.bus
    published: list[bytes] = []

    async def listen(session_id: str) -> None:
        async for payload in bus.subscribe(session_id):
            published.append(payload)

    async def body() -> None:
        presenter, sid = await _session(server, case)
        observers = [participant(server, "observer", f"obs-{k}", case=case) for k in range(8)]
        for observer in observers:
            await observer.join(sid)
        listening = asyncio.run_coroutine_threadsafe(listen(sid), server.loop)
        started = time.monotonic()
        await asyncio.sleep(0.3)
        # 2 s of head poses at 50 Hz: every stream flows, so each is a sign of life.
        for k in range(100):
            await presenter.head_pose(Pose((0.01 * k, 1.6, 0.0), (0.0, 0.0, 0.0, 1.0)))
            await asyncio.sleep(0.02)
        listening.cancel()
        seconds = time.monotonic() - started
        values = [json.loads(p) for p in published]
        signs = [v for v in values if "alive" in v or v.get("channel") == "heartbeat"]
        # One per interval from the one node (9 streams made 9 per interval).
        assert len(signs) <= seconds / FAST.heartbeat_interval_s + 2, f"{len(signs)} publishes"
        told = {pid for v in signs for pid in v.get("alive", [v.get("participant_id")])}
        assert {o.participant_id for o in observers} <= told
        state = server_state(server, sid)
        assert all(state.participants[o.participant_id].present for o in observers)
        for c in (presenter, *observers):
            await c.close()

    run(body)


def test_an_observer_looping_join_does_not_grow_the_log(server: TestServer, case: str) -> None:
    """Issue 14, point 9: an observer that joins without its id again and again (78 joins/s
    were accepted, each a durable event and an audit line) gets its participant back while
    that one has no stream open: one "joined" in the log and the audit log, not one per loop.
    """

    async def body() -> None:
        presenter, sid = await _session(server, case)
        before = len(await _events(server, sid))
        token = server.token("observer", case, subject="looper")
        ids = set()
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = session_pb2_grpc.SessionServiceStub(channel)
            for _ in range(50):
                request = session_pb2.JoinRequest(
                    session_id=common_pb2.SessionId(value=sid), display_name="looper"
                )
                call = stub.Join(request, metadata=(("authorization", f"Bearer {token}"),))
                accepted = await call.read()
                ids.add(accepted.accepted.participant_id.value)
                call.cancel()
                await asyncio.sleep(0.01)  # the server sees the stream end
        events = (await _events(server, sid))[before:]
        assert [e.kind for e in events] == ["joined"], [e.kind for e in events]
        assert len(ids) == 1
        await asyncio.sleep(0.5)  # the audit log is written off the loop
        records = [
            json.loads(line) for line in (server.data / "audit.jsonl").read_text().splitlines()
        ]
        joins = [r for r in records if r.get("session_id") == sid and r["subject"] == "looper"]
        assert len(joins) == 1
        # Two observers with one token, both streaming, are two participants.
        twins = [participant(server, "observer", "twin", case=case) for _ in range(2)]
        for twin in twins:
            await twin.join(sid)
        assert twins[0].participant_id != twins[1].participant_id
        for c in (presenter, *twins):
            await c.close()

    run(body)


def test_a_session_everyone_left_is_evicted_after_its_grace_with_its_log_archived(
    tmp_path: Path,
) -> None:
    """Issue 14, point 9: a node dropped nothing of a session everyone had left (its decoded
    log, its presence map) for as long as it ran. Now it does, ``evict_after_s`` after the
    last one left and the last stream closed. Issue 20: its log is then archived in
    ``<data>/sessions/<id>.jsonl`` (every durable event, 0600) and the bus drops it; the
    old id is NOT_FOUND saying so, and the case's next CreateSession opens a new session."""
    config = HubConfig(
        heartbeat_interval_s=0.2,
        away_after_s=0.8,
        remove_after_s=1.6,
        sweep_interval_s=0.1,
        evict_after_s=0.5,
    )
    with TestServer(tmp_path / "data", session=config) as one_off:
        assert one_off.running is not None
        hub = one_off.running.hub

        async def body() -> None:
            presenter, sid = await _session(one_off, "case-evicted")
            expert = participant(one_off, "expert", "dr-remote", case="case-evicted")
            await expert.join(sid)
            await expert.request_control()
            await expert.leave()
            live = hub.live(sid)
            assert live is not None and set(live.last_seen) == {presenter.participant_id}
            last = await presenter.leave()
            logged = [e.encode() for e in live.events]
            assert len(logged) == last
            await presenter.close()
            await expert.close()
            await asyncio.sleep(0.3)
            assert hub.live(sid) is not None  # within its grace
            archive = one_off.data / "sessions" / f"{sid}.jsonl"
            deadline = time.monotonic() + 10
            while not archive.exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert hub.live(sid) is None
            assert archive.read_bytes().splitlines() == logged  # every durable event, as on the bus
            events = read_archive(archive)
            assert [e.seq for e in events] == list(range(1, last + 1))
            assert [e.kind for e in events][-2:] == ["left", "left"]
            assert archive.stat().st_mode & 0o777 == 0o600
            assert (one_off.data / "sessions").stat().st_mode & 0o777 == 0o700
            assert await one_off.running.bus.get_session(sid) is None  # the bus let it go
            assert await one_off.running.bus.read(sid, 0) == []
            again = participant(one_off, "presenter", "surgeon", case="case-evicted")
            with pytest.raises(ClientError) as err:
                await again.join(sid)
            assert err.value.code == grpc.StatusCode.NOT_FOUND
            assert "archived" in str(err.value)
            fresh = (await again.create_session()).session_id.value
            assert fresh != sid
            await again.join(fresh)
            await again.wait_for(lambda c: again.participant_id in c.state.participants)
            assert again.state.seq == 1  # a new log
            await again.close()

        run(body)
