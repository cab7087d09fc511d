"""Crafted replay controls and pushed-track declarations (issue 14, point 7): each is one
INVALID_ARGUMENT line, nothing of it applied, and the replay or track keeps serving
everyone. A real server on port 0, real PyAV (MJPEG in, libx264 out), SDK clients."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest
from av.video.codeccontext import VideoCodecContext

from holo.client import ClientError
from holo.client.session import SessionClient
from holo.client.video import VideoClient
from holo.errors import InvalidRequestError
from holo.recording.replay import MAX_SPEED, ReplayClock
from holo.testing import TestServer
from holo.testing.testcard import make_test_card
from holo.video.frames import CodecParams, PushedUnit
from holo.video.push import MAX_EXTRADATA_BYTES, PushSource

MEDIA = Path(__file__).resolve().parent.parent / "sample_data" / "video"
INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServer]:
    with TestServer(tmp_path_factory.mktemp("video-crafted"), media=MEDIA) as running:
        yield running


@pytest.fixture
def case() -> str:
    return f"case-{secrets.token_hex(4)}"  # one per test and parameter: a session of its own


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


# Pushed tracks ----------------------------------------------------------------------------

UINT32_MAX = (1 << 32) - 1  # CodecParameters' fields are uint32


def _jpeg(index: int, width: int, height: int) -> bytes:
    """One real MJPEG access unit: test card ``index``, encoded by FFmpeg."""
    enc = av.CodecContext.create("mjpeg", "w")
    assert isinstance(enc, VideoCodecContext)
    enc.width, enc.height, enc.pix_fmt, enc.time_base = width, height, "yuvj420p", Fraction(1, 30)
    picture = av.VideoFrame.from_ndarray(make_test_card(index, width, height), format="rgb24")
    (packet,) = enc.encode(picture.reformat(format="yuvj420p"))
    return bytes(packet)


def _mjpeg(width: int, height: int, **kw: Any) -> CodecParams:
    return CodecParams("mjpeg", width, height, b"", Fraction(1, 30), Fraction(30), **kw)


@pytest.mark.parametrize(
    ("declared", "refusal"),
    [
        (_mjpeg(100_000, 100_000), "push picture 100000 x 100000: at most 4096 pixels a side"),
        (_mjpeg(UINT32_MAX, 2), "push picture 4294967295 x 2"),
        (_mjpeg(4096, 4096), r"and 9437184 in all \(4096 x 2304\)"),
        (_mjpeg(321, 241), "with even sides when transcoded"),
        (replace(_mjpeg(320, 240), codec="h264", width=100_000), "push picture 100000 x 240"),
        (replace(_mjpeg(320, 240), frame_rate=Fraction(UINT32_MAX)), "push frame rate 4294967295"),
        (
            replace(_mjpeg(320, 240), time_base=Fraction(1, UINT32_MAX)),
            "push time_base 1/4294967295",
        ),
        (replace(_mjpeg(320, 240), time_base=Fraction(UINT32_MAX)), "push time_base 4294967295"),
        (replace(_mjpeg(320, 240), extradata=bytes(100_000)), "push extradata of 100000 bytes"),
        (replace(_mjpeg(320, 240), codec="x" * 100_000), "push codec 'xxxxxxxx"),
    ],
)
def test_crafted_pushed_track_declarations_are_refused_in_one_line(
    server: TestServer, case: str, declared: CodecParams, refusal: str
) -> None:
    async def body() -> None:
        presenter, session_id = await _session(server, case)
        video = client(server, "presenter", case)
        with pytest.raises(ClientError, match="INVALID_ARGUMENT") as refused:
            await video.open_track(session_id, "headset", "headset_camera", push=declared)
        message = str(refused.value)
        assert re.search(refusal, message) and "\n" not in message and len(message) < 300
        assert await video.tracks(session_id) == []  # nothing half-opened
        await _pushes_and_serves(video, session_id, 320, 240)  # the node still serves
        await presenter.close()
        await video.close()

    run(body())


def test_the_largest_allowed_picture_is_pushed_and_served(server: TestServer, case: str) -> None:
    async def body() -> None:
        presenter, session_id = await _session(server, case)
        video = client(server, "presenter", case)
        await _pushes_and_serves(video, session_id, 4096, 2304)
        await presenter.close()
        await video.close()

    run(body())


def test_a_pushed_pts_jump_is_refused_and_the_track_keeps_serving(
    server: TestServer, case: str
) -> None:
    async def body() -> None:
        presenter, session_id = await _session(server, case)
        video = client(server, "presenter", case)
        track_id = await _pushes_and_serves(video, session_id, 320, 240)
        for pts in (1 << 62, (1 << 63) - 1, 30 * 3600):  # an hour on: further than 60 s
            with pytest.raises(ClientError, match=r"INVALID_ARGUMENT.*push pts") as refused:
                await video.push(track_id, [PushedUnit(_jpeg(0, 320, 240), pts, True)])
            assert "s from the session clock; pts must follow the capture time" in str(
                refused.value
            )
        # The refusals took nothing: the track lists, and takes the next frame in time.
        (info,) = await video.tracks(session_id)
        assert info.frames == 3
        reply = await video.push(track_id, [PushedUnit(_jpeg(3, 320, 240), 3, True)])
        assert reply.frames == 4 and reply.last_t_ns > info.last_t_ns
        await presenter.close()
        await video.close()

    run(body())


async def _session(server: TestServer, case: str) -> tuple[SessionClient, str]:
    presenter = SessionClient(server.address, token=server.token("presenter", case), insecure=True)
    info = await presenter.create_session()
    await presenter.join(info.session_id.value)
    return presenter, info.session_id.value


async def _pushes_and_serves(video: VideoClient, session_id: str, width: int, height: int) -> str:
    """Open an MJPEG track, push three real frames, and watch them come out as H.264."""
    track = await video.open_track(
        session_id, "headset", "headset_camera", push=_mjpeg(width, height)
    )
    track_id = track.track_id.value
    assert track.codec.codec == "h264" and (track.codec.width, track.codec.height) == (
        width,
        height,
    )
    frames: list[Any] = []

    async def watch() -> None:
        async for item in video.watch(track_id):
            if item.kind == "frame":
                frames.append(item.frame)
                if len(frames) == 3:
                    return

    watching = asyncio.create_task(watch())
    await asyncio.sleep(0.2)  # the viewer is attached before the first frame
    units = [PushedUnit(_jpeg(k, width, height), k, True) for k in range(3)]
    reply = await video.push(track_id, units)
    assert reply.frames == 3
    await asyncio.wait_for(watching, 30)
    assert frames[0].keyframe and [f.pts for f in frames] == [0, 1, 2]
    return track_id


def test_push_source_refuses_crafted_declarations_before_opening_a_codec() -> None:
    def clock() -> int:
        return 10**18

    for args, refusal in [
        (("mjpeg", 100_000, 100_000, b"", Fraction(1, 30)), "push picture 100000 x 100000"),
        (("mjpeg", 320, 240, b"", Fraction(1, 10**10)), "push time_base"),
        (("h264", 320, 240, bytes(MAX_EXTRADATA_BYTES + 1), Fraction(1, 30)), "extradata"),
        (("MJPEG;rm", 320, 240, b"", Fraction(1, 30)), "push codec"),
    ]:
        with pytest.raises(InvalidRequestError, match=refusal):
            PushSource(*args, clock_ns=clock)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="push frame rate"):
        PushSource(
            "mjpeg", 320, 240, b"", Fraction(1, 30), clock_ns=clock, frame_rate=Fraction(241)
        )
    # Without a clock window (a library caller's), a pts that leaves int64 is still refused.
    source = PushSource("h264", 320, 240, b"", Fraction(1, 1), clock_ns=clock)
    source.push(PushedUnit(b"\x00\x00\x00\x01\x65", 0, True))
    with pytest.raises(InvalidRequestError, match="outside the int64 range"):
        source.push(PushedUnit(b"\x00\x00\x00\x01\x65", 1 << 40, False))
    with pytest.raises(InvalidRequestError, match=r"pts \d+ is outside the int64 range"):
        source.push(PushedUnit(b"\x00\x00\x00\x01\x65", 1 << 70, False))


@pytest.mark.parametrize(
    ("source", "refusal"),
    [
        ({"file": "a" * 1_000_000}, "a video source of 1000000 characters"),
        ({"url": "rtsp://" + "a" * 1_000_000}, "a video source of 1000007 characters"),
        ({"file": "a" * 300}, "File name too long; give a path relative to the media"),
        ({"file": "a\0b.mp4"}, "embedded null byte"),
    ],
)
def test_crafted_track_sources_are_refused_in_one_line(
    server: TestServer, case: str, source: dict[str, str], refusal: str
) -> None:
    async def body() -> None:
        presenter, session_id = await _session(server, case)
        video = client(server, "presenter", case)
        with pytest.raises(ClientError, match="INVALID_ARGUMENT") as refused:
            await video.open_track(session_id, "scope", "endoscope", **source)
        message = str(refused.value)
        assert refusal in message and len(message) < 500 and str(MEDIA) not in message
        assert await video.tracks(session_id) == []
        await presenter.close()
        await video.close()

    run(body())
