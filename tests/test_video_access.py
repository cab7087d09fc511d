"""Who may do what with tracks, recordings and replays, and the limits that hold when
calls race: a real server on port 0, SDK clients."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest

from holo.client import ClientError
from holo.client.session import SessionClient
from holo.client.video import VideoClient
from holo.testing import TestServer
from holo.video.frames import CodecParams, PushedUnit

MEDIA = Path(__file__).resolve().parent.parent / "sample_data" / "video"
PUSHED = CodecParams("h264", 320, 240, b"", Fraction(1, 30), Fraction(30))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServer]:
    with TestServer(tmp_path_factory.mktemp("video-access"), media=MEDIA) as running:
        yield running


@pytest.fixture
def case(request: pytest.FixtureRequest) -> str:
    return f"case-{request.node.name[5:40]}".replace("_", "-")


def client(server: TestServer, role: str, case: str, subject: str = "") -> VideoClient:
    token = server.token(role, case, subject=subject or role)
    return VideoClient(server.address, token=token, insecure=True)


async def open_session(server: TestServer, case: str) -> tuple[SessionClient, str]:
    presenter = SessionClient(server.address, token=server.token("presenter", case), insecure=True)
    info = await presenter.create_session()
    await presenter.join(info.session_id.value)
    return presenter, info.session_id.value


def test_concurrent_start_recording_records_once(server: TestServer, case: str) -> None:
    async def body() -> None:
        presenter, session_id = await open_session(server, case)
        video = client(server, "presenter", case)
        results = await asyncio.gather(
            *(video.start_recording(session_id) for _ in range(5)), return_exceptions=True
        )
        started = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, ClientError)]
        assert len(started) == 1 and len(refused) == 4
        assert all("being recorded already" in str(e) for e in refused)
        stopped = await video.stop_recording(session_id)
        assert stopped.recording_id.value == started[0].recording_id.value
        with pytest.raises(ClientError, match=r"FAILED_PRECONDITION.*not being recorded"):
            await video.stop_recording(session_id)
        await presenter.close()
        await video.close()

    asyncio.run(body())


def test_recordings_and_replays_stay_in_their_case(server: TestServer, case: str) -> None:
    async def body() -> None:
        presenter, session_id = await open_session(server, case)
        video = client(server, "presenter", case)
        await video.start_recording(session_id)
        info = await video.stop_recording(session_id)
        recording_id = info.recording_id.value
        other = client(server, "presenter", "another-case")
        assert recording_id not in [r.recording_id.value for r in await other.recordings()]
        with pytest.raises(ClientError, match="PERMISSION_DENIED"):
            await other.open_replay(recording_id)
        # An observer of the case may open its own replay and seek it, not someone else's.
        mine = await client(server, "observer", case, "obs-a").open_replay(recording_id)
        theirs = client(server, "observer", case, "obs-b")
        with pytest.raises(ClientError, match=r"PERMISSION_DENIED.*whoever opened it"):
            await theirs.control_replay(mine.session_id.value, pause=True)
        owner = client(server, "observer", case, "obs-a")
        paused = await owner.control_replay(mine.session_id.value, pause=True)
        assert paused.speed == 0.0 and paused.epoch > mine.epoch
        with pytest.raises(ClientError, match=r"INVALID_ARGUMENT.*speed"):
            await owner.control_replay(mine.session_id.value, speed=100.0)
        # A subject holds two replays: the third closes its oldest.
        second = await owner.open_replay(recording_id)
        third = await owner.open_replay(recording_id)
        with pytest.raises(ClientError, match="NOT_FOUND"):
            await owner.control_replay(mine.session_id.value, resume=True)
        for kept in (second, third):
            await owner.control_replay(kept.session_id.value, resume=True)
        for one in (video, other, theirs, owner):
            await one.close()
        await presenter.close()

    asyncio.run(body())


def test_a_pushed_track_takes_frames_only_from_who_opened_it(server: TestServer, case: str) -> None:
    async def body() -> None:
        presenter, session_id = await open_session(server, case)
        video = client(server, "presenter", case)
        track = await video.open_track(session_id, "headset", "headset_camera", push=PUSHED)
        expert = client(server, "expert", case)
        with pytest.raises(ClientError, match=r"PERMISSION_DENIED.*opened it"):
            await expert.push(track.track_id.value, [PushedUnit(b"\x00\x00\x00\x01\x65", 0, True)])
        far = server.running.hub.clock.now_ns() + 5_000_000_000  # type: ignore[union-attr]
        with pytest.raises(ClientError, match=r"INVALID_ARGUMENT.*sync the client's clock"):
            await video.push(
                track.track_id.value, [PushedUnit(b"\x00\x00\x00\x01\x65", 0, True, far)]
            )
        with pytest.raises(ClientError, match="RESOURCE_EXHAUSTED"):
            await video.push(track.track_id.value, [PushedUnit(bytes(2 << 20), 0, True)])
        # The track still takes its opener's frames after the refusals; closed, it is gone.
        reply = await video.push(
            track.track_id.value, [PushedUnit(b"\x00\x00\x00\x01\x65", 0, True)]
        )
        assert reply.frames == 1
        await video.close_track(track.track_id.value)
        with pytest.raises(ClientError, match="NOT_FOUND"):
            await video.close_track(track.track_id.value)
        for one in (video, expert):
            await one.close()
        await presenter.close()

    asyncio.run(body())


def test_tracks_per_session_are_limited_even_when_opened_at_once(
    server: TestServer, case: str
) -> None:
    async def body() -> None:
        presenter, session_id = await open_session(server, case)
        video = client(server, "presenter", case)
        results = await asyncio.gather(
            *(
                video.open_track(session_id, f"cam{k}", "room_camera", push=PUSHED)
                for k in range(12)
            ),
            return_exceptions=True,
        )
        opened = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, ClientError)]
        assert len(opened) == 8 and len(refused) == 4
        assert all("RESOURCE_EXHAUSTED" in str(e) for e in refused)
        for track in opened:
            await video.close_track(track.track_id.value)
        assert await video.tracks(session_id) == []
        await video.close()
        await presenter.close()

    asyncio.run(body())


def test_a_full_disk_stops_the_recording_not_the_server(tmp_path: Path) -> None:
    """`holo serve` may write no file beyond 4 MB (RLIMIT_FSIZE: writes past it fail, as on
    a full disk): the recording of 7 MB of pushed video stops with DATA_LOSS saying why,
    what was written stays readable, and the server goes on serving."""
    from pushed_video import noisy_units

    from holo.recording.files import Recording
    from holo.testing import ServeProcess

    units = noisy_units(120)
    assert sum(len(u.data) for u in units) > 7 << 20
    node = ServeProcess(tmp_path / "data", max_file_bytes=4 << 20)
    case = "case-full-disk"

    async def body() -> str:
        presenter = SessionClient(node.address, token=node.token("presenter", case), insecure=True)
        info = await presenter.create_session()
        await presenter.join(info.session_id.value)
        video = VideoClient(node.address, token=node.token("presenter", case), insecure=True)
        session_id = info.session_id.value
        track = await video.open_track(session_id, "headset", "headset_camera", push=PUSHED)
        recording = await video.start_recording(session_id)
        for unit in units:
            await video.push(track.track_id.value, [unit])
        await asyncio.sleep(0.5)
        with pytest.raises(ClientError, match=r"DATA_LOSS.*stopped early"):
            await video.stop_recording(session_id)
        # Still serving: a new track, listed.
        await video.open_track(session_id, "scope", "endoscope", push=PUSHED)
        assert {t.name for t in await video.tracks(session_id)} == {"headset", "scope"}
        await presenter.close()
        await video.close()
        return recording.recording_id.value

    try:
        recording_id = asyncio.run(asyncio.wait_for(body(), 60))
    finally:
        assert node.stop() == 0
    kept = Recording.open(tmp_path / "data" / "recordings" / recording_id)
    frames = list(kept.frames(kept.tracks[0].track_id))
    assert 0 < len(frames) < len(units)
    # (Annex B in, length-prefixed in Matroska: compare times, not bytes.)
    assert [f.pts for f in frames] == [u.pts for u in units[: len(frames)]]


def test_a_track_the_recorder_refuses_stops_alone(server: TestServer, case: str) -> None:
    """A headset declares extradata the muxer cannot use: that track is not recorded (and
    StopRecording says so, DATA_LOSS), while the other track and the events are."""

    async def body() -> str:
        presenter, session_id = await open_session(server, case)
        video = client(server, "presenter", case)
        recording = await video.start_recording(session_id)
        scope = await video.open_track(session_id, "scope", "endoscope", file="operative.mp4")
        bad = CodecParams("h264", 320, 240, b"\x02junk", Fraction(1, 30), Fraction(30))
        headset = await video.open_track(session_id, "headset", "headset_camera", push=bad)
        await asyncio.sleep(1.2)
        with pytest.raises(ClientError, match=rf"DATA_LOSS.*track {headset.track_id.value}"):
            await video.stop_recording(session_id)
        for track in (scope, headset):
            await video.close_track(track.track_id.value)
        await presenter.close()
        await video.close()
        return recording.recording_id.value

    from holo.recording.files import Recording

    recording_id = asyncio.run(asyncio.wait_for(body(), 60))
    kept = Recording.open(server.data / "recordings" / recording_id)
    scope_track = next(t for t in kept.tracks if t.name == "scope")
    assert len(list(kept.frames(scope_track.track_id))) >= 30
    assert [e.kind for e in kept.events()][:1] == ["joined"]
