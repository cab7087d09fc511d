"""Crafted replay controls and pushed-track declarations (issue 14, point 7): each is one
INVALID_ARGUMENT line, nothing of it applied, and the replay or track keeps serving
everyone. A real server on port 0, real PyAV, SDK clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from holo.client import ClientError
from holo.client.session import SessionClient
from holo.client.video import VideoClient
from holo.errors import InvalidRequestError
from holo.recording.replay import MAX_SPEED, ReplayClock
from holo.testing import TestServer

INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServer]:
    with TestServer(tmp_path_factory.mktemp("video-crafted")) as running:
        yield running


@pytest.fixture
def case(request: pytest.FixtureRequest) -> str:
    return f"case-{request.node.name[5:40]}".replace("_", "-")


def run(body: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(body, timeout))


def client(server: TestServer, role: str, case: str, subject: str = "") -> VideoClient:
    token = server.token(role, case, subject=subject or role)
    return VideoClient(server.address, token=token, insecure=True)


async def _recording(server: TestServer, case: str) -> tuple[str, int, int]:
    """A short recording of a session with a participant; its id and span."""
    presenter = SessionClient(server.address, token=server.token("presenter", case), insecure=True)
    info = await presenter.create_session()
    session_id = info.session_id.value
    await presenter.join(session_id)  # in the log before the start: in every replayed state
    video = client(server, "presenter", case)
    await video.start_recording(session_id)
    await asyncio.sleep(0.3)
    rec = await video.stop_recording(session_id)
    await presenter.close()
    await video.close()
    return rec.recording_id.value, rec.started_t_ns, rec.stopped_t_ns


async def _serves(server: TestServer, case: str, replay_id: str) -> None:
    """Sync and Join on the replay work for someone other than its opener."""
    viewer = client(server, "observer", case, "someone-else")
    clock = viewer.clock(replay_id)
    sample = await clock.sync()
    assert sample.epoch >= 1
    session = SessionClient(
        server.address, token=server.token("observer", case, subject="someone-else"), insecure=True
    )
    await session.join(replay_id)
    assert session.state.participants  # the recorded presenter, folded from the log
    await session.close()
    await viewer.close()


@pytest.mark.parametrize(
    ("control", "refusal"),
    [
        ({"seek_t_ns": INT64_MAX}, "seek to t_ns 9223372036854775807: outside the recording"),
        ({"seek_t_ns": INT64_MIN}, "outside the recording"),
        ({"seek_t_ns": -1}, "outside the recording"),
        ({"speed": 1e-300}, "replay speed 1e-300: choose one from 1/16 to 16"),
        ({"speed": 17.0}, "replay speed 17"),
        ({"speed": float("nan")}, "replay speed nan"),
        ({"speed": float("inf")}, "replay speed inf"),
        ({"speed": -1.0}, "replay speed -1"),
        # A valid part with a crafted one: nothing of the call is applied.
        ({"speed": 2.0, "seek_t_ns": INT64_MAX}, "outside the recording"),
        ({"pause": True, "seek_t_ns": INT64_MAX}, "outside the recording"),
    ],
)
def test_crafted_replay_controls_are_refused_and_the_replay_keeps_serving(
    server: TestServer, case: str, control: dict[str, Any], refusal: str
) -> None:
    async def body() -> None:
        recording_id, started, stopped = await _recording(server, case)
        owner = client(server, "observer", case, "opener")
        replay = await owner.open_replay(recording_id)
        replay_id = replay.session_id.value
        with pytest.raises(ClientError, match="INVALID_ARGUMENT") as refused:
            await owner.control_replay(replay_id, **control)
        message = str(refused.value)
        assert refusal in message and "\n" not in message
        # Nothing of it applied: the same speed and epoch, the clock within the recording.
        after = await owner.control_replay(replay_id)
        assert (after.speed, after.epoch) == (replay.speed, replay.epoch)
        assert started <= after.position_t_ns <= stopped + 60 * 10**9
        await _serves(server, case, replay_id)
        # A valid control still works, to both ends of the span.
        for target in (stopped, started):
            moved = await owner.control_replay(replay_id, seek_t_ns=target, speed=1 / 16)
            assert moved.epoch > after.epoch and moved.speed == 1 / 16
        await _serves(server, case, replay_id)
        await owner.close()

    run(body())


@pytest.mark.parametrize("speed", [1e-300, 100.0, float("nan")])
def test_crafted_open_replay_speed_is_refused_and_closes_nothing(
    server: TestServer, case: str, speed: float
) -> None:
    async def body() -> None:
        recording_id, _, _ = await _recording(server, case)
        owner = client(server, "observer", case, "opener")
        kept = [await owner.open_replay(recording_id) for _ in range(2)]
        with pytest.raises(ClientError, match=r"INVALID_ARGUMENT.*replay speed"):
            await owner.open_replay(recording_id, speed=speed)
        # A refused open makes no room: the opener's two replays are both still there.
        for replay in kept:
            await owner.control_replay(replay.session_id.value, pause=True)
            await _serves(server, case, replay.session_id.value)
        await owner.close()

    run(body())


def test_the_replay_clock_stays_in_the_int64_range_whatever_it_is_given() -> None:
    clock = ReplayClock(INT64_MAX - 1000, MAX_SPEED)
    time.sleep(0.01)  # 16x: 160 ms of session time, far past INT64_MAX
    assert clock.now_ns() == INT64_MAX
    clock.seek(1 << 100)
    assert clock.now_ns() == INT64_MAX
    clock.set(paused=True)
    clock.seek(-(1 << 100))
    assert clock.now_ns() == INT64_MIN
    for speed in (1e-300, 0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(InvalidRequestError, match="replay speed"):
            clock.set(speed=speed)
    assert (clock.speed, clock.rate) == (MAX_SPEED, 0.0)
