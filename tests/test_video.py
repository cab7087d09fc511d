"""Video in a session, end to end: a real server on port 0, real FFmpeg (PyAV), SDK clients.

The sample video (sample_data/video/operative.mp4: 320 x 240, 30 fps, its frame number
burned into the picture as a barcode, pts = frame number) plays into a session from the
server's media folder while a scripted presenter commits the hologram's anchor at known
frames. An observer decodes every frame it receives, reads the burned-in number, and pairs
the frame with the session state as of its t_ns (SessionTimeline + FrameSync): every frame
must show exactly the pose scripted for it (sync error 0 frames), live and after a
record -> replay round trip (with a seek and a change of speed).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from holo.auth import load_secret, mint_token
from holo.client import ClientError
from holo.client.clock import ClockSync
from holo.client.session import SessionClient
from holo.client.timeline import FrameSync, SessionTimeline
from holo.client.video import VideoClient
from holo.recording.files import Recording
from holo.session.records import Pose
from holo.testing import TestServer
from holo.testing.probe import SyncProbe, sync_errors
from holo.testing.testcard import make_test_card
from holo.video.frames import CameraPose, CodecParams, Frame, Intrinsics, PushedUnit

REPO = Path(__file__).resolve().parent.parent
HOLO = [sys.executable, "-m", "holo.cli"]
REPLAY_ARGS = ["--listen", "127.0.0.1:0", "--insecure", "--speed", "4"]
MEDIA = REPO / "sample_data" / "video"
SAMPLE_FRAMES = 300  # operative.mp4: 10 s at 30 fps
EVERY = 10  # the scripted presenter moves the hologram at every 10th frame
DELAY_NS = 300_000_000  # the observers' jitter buffer


def pose_for(index: int) -> Pose:
    """The scripted anchor pose committed at frame ``index`` (distinct per commit)."""
    return Pose((index / 1000, 1.0, -0.5), (0.0, 0.0, 0.0, 1.0))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServer]:
    with TestServer(tmp_path_factory.mktemp("video"), media=MEDIA) as running:
        yield running


@pytest.fixture
def case(request: pytest.FixtureRequest) -> str:
    return f"case-{request.node.name[5:40]}".replace("_", "-")


def run(body: Any, timeout: float = 90) -> Any:
    return asyncio.run(asyncio.wait_for(body, timeout))


@dataclass
class Observer:
    """A participant that renders (frame, state) pairs through a jitter buffer."""

    session: SessionClient
    video: VideoClient
    clock: ClockSync
    timeline: SessionTimeline
    sync: FrameSync[tuple[Frame, int]] = field(init=False)
    # What it rendered; frames older than the snapshot the observer started from are not
    # paired (their state is not known).
    probe: SyncProbe = field(default_factory=SyncProbe)
    # True while the clock estimate is stale (a replay seek, until the clock is synced).
    hold: bool = False

    def __post_init__(self) -> None:
        self.sync = FrameSync(self.timeline, delay_ns=DELAY_NS, t_of=lambda f: f[0].t_ns)

    def render(self, model_id: str) -> None:
        if self.hold:
            return
        for (frame, number), at in self.sync.ready(self.clock.now()):
            if at.exact:
                self.probe.record(frame.index, number, at.anchor_pose(model_id))

    async def watch(self, track_id: str, model_id: str, stop: asyncio.Event, **kw: Any) -> None:
        async for item in self.video.watch(track_id, **kw):
            if item.kind == "header":
                assert item.params is not None
                self.probe.start(item.params)
            elif item.kind == "frame":
                assert item.frame is not None
                self.sync.push((item.frame, self.probe.read(item.frame)))
            elif item.kind == "skipped":  # a replay seek: what was held is of before it
                self.sync.clear()
            self.render(model_id)
            if stop.is_set():
                return


async def _participant(
    server: TestServer, role: str, case: str, *, timeline: SessionTimeline | None = None
) -> SessionClient:
    return SessionClient(
        server.address,
        token=server.token(role, case, subject=role),
        insecure=True,
        display_name=role,
        timeline=timeline,
    )


async def _observer(server: TestServer, case: str, session_id: str, **kw: Any) -> Observer:
    timeline = SessionTimeline()
    session = await _participant(server, "observer", case, timeline=timeline)
    video = VideoClient(server.address, token=server.token("observer", case), insecure=True)
    clock = video.clock(session_id if session_id.startswith("rpl-") else "")
    await clock.sync_many(8)
    observer = Observer(session, video, clock, timeline)
    await session.join(session_id)
    return observer


async def _scripted_presenter(
    presenter: SessionClient,
    video: VideoClient,
    clock: ClockSync,
    track_id: str,
    model_id: str,
    commits: dict[int, Pose],
    stop: asyncio.Event,
) -> None:
    """Commits pose_for(i) at every EVERY-th frame, stamped with that frame's t_ns."""
    async for item in video.watch(track_id):
        if item.kind != "frame":
            continue
        frame = item.frame
        assert frame is not None
        if frame.index % EVERY == 0 and clock.now() - frame.t_ns < 500_000_000:
            await presenter.commit_anchor(model_id, pose_for(frame.index), t_ns=frame.t_ns)
            commits[frame.index] = pose_for(frame.index)
        if stop.is_set():
            return


def _check_sync(observer: Observer, commits: dict[int, Pose], *, minimum: int) -> int:
    """Every frame rendered after the first commit shows its scripted pose (sync error 0
    frames) and the number burned into its picture matches its index; returns how many."""
    errors = sync_errors(observer.probe.rendered, commits, frames_per_loop=SAMPLE_FRAMES)
    wrong = [e for e in errors if e != 0]
    assert not wrong, f"{len(wrong)} of {len(errors)} frames out of sync by {wrong[:10]} frames"
    assert len(errors) >= minimum, f"only {len(errors)} frames were checked"
    return len(errors)


async def _live_session(
    server: TestServer, case: str, knee_glb: Path
) -> tuple[SessionClient, VideoClient, ClockSync, str, str]:
    model_id = server.publish_model(case, knee_glb)
    presenter = await _participant(server, "presenter", case)
    info = await presenter.create_session()
    await presenter.join(info.session_id.value)
    await presenter.load_model(model_id, pose_for(0))
    video = VideoClient(server.address, token=server.token("presenter", case), insecure=True)
    clock = video.clock()
    await clock.sync_many(8)
    return presenter, video, clock, info.session_id.value, model_id


def test_holograms_and_video_in_sync_live_and_after_replay(
    server: TestServer, case: str, knee_glb: Path
) -> None:
    async def body() -> None:
        presenter, video, clock, session_id, model_id = await _live_session(server, case, knee_glb)
        recording = await video.start_recording(session_id)
        track = await video.open_track(
            session_id, "endoscope", "endoscope", file="operative.mp4", loop=True
        )
        track_id = track.track_id.value
        assert track.codec.codec == "h264" and (track.codec.width, track.codec.height) == (320, 240)
        observer = await _observer(server, case, session_id)
        commits: dict[int, Pose] = {}
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(
                _scripted_presenter(presenter, video, clock, track_id, model_id, commits, stop)
            ),
            asyncio.create_task(observer.watch(track_id, model_id, stop)),
        ]
        await asyncio.sleep(4.0)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        for (frame, number), at in observer.sync.drain():
            if at.exact:
                observer.probe.record(frame.index, number, at.anchor_pose(model_id))
        live_checked = _check_sync(observer, commits, minimum=60)
        info = await video.stop_recording(session_id)
        assert info.recording_id.value == recording.recording_id.value
        assert [t.name for t in info.tracks] == ["endoscope"]
        await video.close_track(track_id)

        # Replay at 2x: the same frames with the same poses; then a seek back.
        replay = await video.open_replay(info.recording_id.value, speed=2.0)
        replay_id = replay.session_id.value
        viewer = await _observer(server, case, replay_id)
        assert viewer.clock.rate == 2.0
        stop = asyncio.Event()
        watching = asyncio.create_task(viewer.watch(track_id, model_id, stop, session_id=replay_id))
        await asyncio.sleep(1.0)
        seek_to = info.started_t_ns + 1_000_000_000
        viewer.hold = True
        moved = await video.control_replay(replay_id, seek_t_ns=seek_to, speed=1.0)
        assert moved.speed == 1.0 and moved.epoch != replay.epoch
        await viewer.clock.sync_many(8)
        viewer.hold = False
        assert viewer.clock.rate == 1.0
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.wait_for(watching, 10)
        replay_checked = _check_sync(viewer, commits, minimum=30)
        # The seek went back: frames of the recording's second second appear again.
        indices = [index for index, _n, _p in viewer.probe.rendered]
        assert any(b < a for a, b in itertools.pairwise(indices)), "no seek seen"
        assert viewer.session.resyncs >= 1
        print(f"sync checked on {live_checked} live and {replay_checked} replayed frames")
        for closing in (presenter, observer.session, viewer.session):
            await closing.close()
        for client in (video, observer.video, viewer.video):
            await client.close()

    run(body(), timeout=120)


def test_late_viewer_starts_at_a_keyframe_and_tracks_are_listed(
    server: TestServer, case: str, knee_glb: Path
) -> None:
    async def body() -> None:
        presenter, video, _clock, session_id, _model = await _live_session(server, case, knee_glb)
        track = await video.open_track(
            session_id, "room", "room_camera", file="operative.mp4", loop=True
        )
        await asyncio.sleep(1.3)  # past the first keyframe (every 30 frames)
        first: Frame | None = None
        async for item in video.watch(track.track_id.value):
            if item.kind == "frame":
                first = item.frame
                break
        assert first is not None and first.keyframe and first.index % 30 == 0 and first.index > 0
        listed = await video.tracks(session_id)
        assert [t.name for t in listed] == ["room"] and listed[0].live and listed[0].frames > 30
        closed = await video.close_track(track.track_id.value)
        assert not closed.live and closed.ended_reason
        await presenter.close()
        await video.close()

    run(body())


def _noise_h264(
    count: int, size: tuple[int, int] = (640, 480), b_frames: int = 0
) -> tuple[CodecParams, list[Frame]]:
    """``count`` H.264 frames of random noise (large: ~100 KB+ each at 640 x 480),
    keyframe every 30, in decode order."""
    rng = np.random.default_rng(7)
    codec: Any = av.CodecContext.create("libx264", "w")
    codec.width, codec.height = size
    codec.pix_fmt = "yuv420p"
    codec.time_base = Fraction(1, 30)
    # Without a global header, libx264 repeats SPS/PPS in-band at every keyframe.
    codec.options = {"g": "30", "bf": str(b_frames), "crf": "12", "preset": "ultrafast"}
    codec.thread_count = 1
    frames: list[Frame] = []
    for i in range(count):
        rgb = make_test_card(i, *size)
        rgb[size[1] // 4 :] = rng.integers(0, 256, (size[1] - size[1] // 4, size[0], 3), np.uint8)
        picture = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        picture.pts = i
        for packet in codec.encode(picture):
            frames.append(
                Frame(len(frames), 0, packet.pts, packet.dts, 1, packet.is_keyframe, bytes(packet))
            )
    for packet in codec.encode(None):
        frames.append(
            Frame(len(frames), 0, packet.pts, packet.dts, 1, packet.is_keyframe, bytes(packet))
        )
    params = CodecParams("h264", size[0], size[1], b"", Fraction(1, 30), Fraction(30))
    return params, frames


def test_stalled_viewer_drops_to_keyframes_others_get_every_frame(
    server: TestServer, case: str, knee_glb: Path
) -> None:
    params, frames = _noise_h264(330)
    assert sum(len(f.data) for f in frames) > 40 << 20, "the frames must outgrow the buffers"

    async def body() -> None:
        presenter, video, _clock, session_id, _model = await _live_session(server, case, knee_glb)
        track = await video.open_track(session_id, "headset", "headset_camera", push=params)
        track_id = track.track_id.value
        healthy = VideoClient(server.address, token=server.token("observer", case), insecure=True)
        stalled = VideoClient(server.address, token=server.token("observer", case), insecure=True)
        got: list[int] = []
        stalled_got: list[tuple[str, int]] = []
        healthy_ready, stalled_ready = asyncio.Event(), asyncio.Event()
        resume = asyncio.Event()

        async def watch_healthy() -> None:
            async for item in healthy.watch(track_id):
                healthy_ready.set()
                if item.kind == "frame":
                    assert item.frame is not None
                    got.append(item.frame.index)
                    if len(got) == len(frames):
                        return

        async def watch_stalled() -> None:
            async for item in stalled.watch(track_id):
                if item.kind == "header":
                    stalled_ready.set()
                    await resume.wait()  # reads nothing meanwhile: gRPC flow control holds
                elif item.kind == "frame":
                    assert item.frame is not None
                    stalled_got.append(("frame", item.frame.index))
                    if item.frame.index == len(frames) - 1:
                        return
                elif item.kind == "skipped":
                    assert item.skipped is not None
                    stalled_got.append(("skipped", item.skipped[1]))

        tasks = [asyncio.create_task(watch_healthy()), asyncio.create_task(watch_stalled())]
        await asyncio.wait_for(asyncio.gather(healthy_ready.wait(), stalled_ready.wait()), 10)
        assert server.running is not None
        relay = server.running.video.tracks[track_id]
        peak = 0
        for frame in frames:  # one per call: a call carries at most 1 MiB
            await video.push(track_id, [PushedUnit(frame.data, frame.pts, frame.keyframe)])
            await asyncio.sleep(0.002)
            peak = max(peak, max(v.queued_bytes for v in relay._viewers))
        # Measured while the stalled viewer is still stalled: its queue stayed bounded.
        assert peak <= relay.limits.max_bytes
        stalled_viewer = max(relay._viewers, key=lambda v: v.frames_skipped)
        assert stalled_viewer.skips >= 1
        resume.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        assert got == list(range(len(frames))), "a healthy viewer lost or reordered frames"
        kinds = [k for k, _ in stalled_got]
        assert "skipped" in kinds
        # After every skip, the next frame is a keyframe at the index the note gave.
        keyframes = {f.index for f in frames if f.keyframe}
        for (kind, value), (after_kind, after) in itertools.pairwise(stalled_got):
            if kind == "skipped" and after_kind == "frame":
                assert after == value and after in keyframes
        indices = [v for k, v in stalled_got if k == "frame"]
        assert indices == sorted(indices) and len(indices) < len(frames)
        await presenter.close()
        for client in (video, healthy, stalled):
            await client.close()

    run(body())


def test_telestration_on_a_frame_reaches_everyone(
    server: TestServer, case: str, knee_glb: Path
) -> None:
    async def body() -> None:
        presenter, video, _clock, session_id, _model = await _live_session(server, case, knee_glb)
        track = await video.open_track(session_id, "scope", "endoscope", file="operative.mp4")
        expert = await _participant(server, "expert", case)
        await expert.join(session_id)
        observer = await _participant(server, "observer", case)
        await observer.join(session_id)
        t = track.last_t_ns or 1
        seq = await expert.telestrate(
            "t-1", track.track_id.value, t, [(0.1, 0.2), (0.5, 0.5)], 0xFF0000
        )
        await observer.wait_seq(seq)
        drawn = observer.state.telestrations["t-1"]
        assert drawn.track_id == track.track_id.value and drawn.frame_t_ns == t
        assert drawn.points == ((0.1, 0.2), (0.5, 0.5)) and drawn.author == expert.participant_id
        with pytest.raises(ClientError, match="PERMISSION_DENIED"):
            await observer.telestrate("t-2", track.track_id.value, t, [(0, 0), (1, 1)])
        with pytest.raises(ClientError, match=r"normalised image coordinates"):
            await expert.telestrate("t-3", track.track_id.value, t, [(0, 0), (1.5, 1)])
        seq = await expert.remove_annotation("t-1")
        await observer.wait_seq(seq)
        assert "t-1" not in observer.state.telestrations
        for one in (presenter, expert, observer):
            await one.close()
        await video.close()

    run(body())


def test_bad_video_requests_are_one_line_errors(
    server: TestServer, case: str, knee_glb: Path, tmp_path: Path
) -> None:
    async def body() -> None:
        presenter, video, _clock, session_id, _model = await _live_session(server, case, knee_glb)
        cases = [
            ({"file": "../../etc/passwd"}, "PERMISSION_DENIED", "outside the media directory"),
            ({"file": "missing.mp4"}, "NOT_FOUND", "missing.mp4"),
            ({"url": "gopher://example"}, "INVALID_ARGUMENT", "scheme"),
            ({"device": "/etc/passwd"}, "INVALID_ARGUMENT", "V4L2"),
            ({}, "INVALID_ARGUMENT", "source"),
        ]
        for source, code, words in cases:
            with pytest.raises(ClientError) as err:
                await video.open_track(session_id, "x", "endoscope", **source)
            assert code in str(err.value) and words in str(err.value), str(err.value)
            assert "\n" not in str(err.value)
        observer = VideoClient(server.address, token=server.token("observer", case), insecure=True)
        with pytest.raises(ClientError, match="PERMISSION_DENIED"):
            await observer.open_track(session_id, "x", "endoscope", file="operative.mp4")
        with pytest.raises(ClientError, match="PERMISSION_DENIED"):
            await observer.start_recording(session_id)
        other = VideoClient(
            server.address, token=server.token("presenter", "other-case"), insecure=True
        )
        track = await video.open_track(session_id, "scope", "endoscope", file="operative.mp4")
        with pytest.raises(ClientError, match="PERMISSION_DENIED"):
            async for _ in other.watch(track.track_id.value):
                pass
        with pytest.raises(ClientError, match="NOT_FOUND"):
            async for _ in video.watch("trk-000000000000"):
                pass
        with pytest.raises(ClientError, match="NOT_FOUND"):
            await video.open_replay("rec-000000000000")
        with pytest.raises(ClientError, match="not a pushed track"):
            await video.push(track.track_id.value, [PushedUnit(b"\x00\x00\x01", 0, True)])
        # The server is still up and serving.
        assert [t.name for t in await video.tracks(session_id)] == ["scope"]
        await presenter.close()
        for client in (video, observer, other):
            with contextlib.suppress(Exception):
                await client.close()

    run(body())


def test_holo_replay_serves_a_recording_folder(
    server: TestServer, case: str, knee_glb: Path, tmp_path: Path
) -> None:
    """`holo replay DIR` (a separate process) serves what a live session recorded."""

    async def record() -> tuple[Path, str, int]:
        presenter, video, _clock, session_id, model_id = await _live_session(server, case, knee_glb)
        info = await video.start_recording(session_id)
        track = await video.open_track(session_id, "scope", "endoscope", file="operative.mp4")
        await asyncio.sleep(0.5)
        seq = await presenter.commit_anchor(model_id, pose_for(77))
        await asyncio.sleep(0.5)
        await video.stop_recording(session_id)
        await video.close_track(track.track_id.value)
        await presenter.close()
        await video.close()
        return server.data / "recordings" / info.recording_id.value, model_id, seq

    folder, model_id, seq = run(record())
    data = tmp_path / "replay-data"
    process = subprocess.Popen(
        [*HOLO, "replay", str(folder), "--data", str(data), *REPLAY_ARGS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        report = json.loads(process.stdout.readline())
        assert report["case_id"] == case and [t["name"] for t in report["tracks"]] == ["scope"]
        token = mint_token(
            load_secret(data), role="presenter", case_id=case, subject="viewer", ttl_s=600
        )

        async def watch() -> None:
            # By default a replay waits, paused at the recording's start, for its first
            # viewer: a viewer who connects a while after `holo replay` misses nothing.
            assert report["start"] == "join"
            await asyncio.sleep(1.0)
            probe = VideoClient(report["listen"], token=token, insecure=True)
            clock = probe.clock(report["session_id"])
            await clock.sync()
            assert clock.rate == 0.0 and clock.now() == report["started_t_ns"]
            viewer = SessionClient(report["listen"], token=token, insecure=True)
            await viewer.join(report["session_id"])
            await clock.sync()
            assert clock.rate == 4.0  # --speed 4, running from the first join
            await probe.close()
            await viewer.wait_seq(seq, timeout_s=20)  # the recorded commit, replayed
            assert viewer.state.models[model_id].anchor_pose == pose_for(77)
            video = VideoClient(report["listen"], token=token, insecure=True)
            frames = 0
            track_id = report["tracks"][0]["track_id"]
            async for item in video.watch(track_id, session_id=report["session_id"]):
                frames += item.kind == "frame"
                if frames == 10:
                    break
            assert frames == 10
            with pytest.raises(ClientError, match=r"FAILED_PRECONDITION.*read-only"):
                await viewer.commit_anchor(model_id, pose_for(1))
            await viewer.close()
            await video.close()

        run(watch(), timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0


def test_holo_replay_refuses_a_folder_that_is_no_recording(tmp_path: Path) -> None:
    result = subprocess.run(
        [*HOLO, "replay", str(tmp_path), "--data", str(tmp_path), "--insecure"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "recording" in lines[0] and str(tmp_path) in lines[0]


def test_pushed_frames_keep_pose_intrinsics_and_capture_time(
    server: TestServer, case: str, knee_glb: Path
) -> None:
    """A headset pushes its camera's access units (the sample video's, as demuxed) with the
    camera pose and intrinsics of each; a second track runs beside it in the same session."""
    with av.open(str(MEDIA / "operative.mp4")) as container:
        stream = container.streams.video[0]
        extradata = bytes(stream.codec_context.extradata or b"")
        packets = [
            (bytes(p), int(p.pts), p.is_keyframe) for p in container.demux(stream) if p.size
        ][:40]
    params = CodecParams("h264", 320, 240, extradata, Fraction(1, 30), Fraction(30))

    async def body() -> None:
        presenter, video, clock, session_id, _model = await _live_session(server, case, knee_glb)
        scope = await video.open_track(session_id, "scope", "endoscope", file="operative.mp4")
        headset = await video.open_track(session_id, "headset", "headset_camera", push=params)
        assert headset.codec.extradata == extradata  # H.264 passes through as declared
        listed = await video.tracks(session_id)
        assert {t.name for t in listed} == {"scope", "headset"}
        watcher = VideoClient(server.address, token=server.token("expert", case), insecure=True)
        got: list[Frame] = []

        async def watch() -> None:
            probe = SyncProbe()
            async for item in watcher.watch(headset.track_id.value):
                if item.kind == "header":
                    assert item.params is not None
                    probe.start(item.params)
                elif item.kind == "frame" and item.frame is not None:
                    assert probe.read(item.frame) == item.frame.index  # pictures decode
                    got.append(item.frame)
                    if len(got) == len(packets):
                        return

        task = asyncio.create_task(watch())
        await asyncio.sleep(0.2)
        t0 = clock.now()
        pushed = [
            PushedUnit(
                data,
                pts,
                key,
                capture_t_ns=t0 - 800_000_000 + pts * 20_000_000,  # within the last 1 s
                intrinsics=Intrinsics(300.0, 300.0, 160.0 + pts, 120.0),
                pose=CameraPose((0.0, 1.6, pts / 100), (0.0, 0.0, 0.0, 1.0)),
            )
            for data, pts, key in packets
        ]
        for k in range(0, len(pushed), 8):
            reply = await video.push(headset.track_id.value, pushed[k : k + 8])
        assert reply.frames == len(packets)
        await asyncio.wait_for(task, 20)
        for frame, sent in zip(got, pushed, strict=True):
            assert frame.data == sent.data and frame.pts == sent.pts
            assert frame.t_ns == sent.capture_t_ns
            assert frame.intrinsics == sent.intrinsics and frame.pose == sent.pose
        await video.close_track(scope.track_id.value)
        await video.close_track(headset.track_id.value)
        await presenter.close()
        await video.close()
        await watcher.close()

    run(body())


def test_pushed_b_frames_keep_their_decode_order_and_times(
    server: TestServer, case: str, knee_glb: Path
) -> None:
    params, frames = _noise_h264(40, size=(160, 120), b_frames=2)
    assert any(f.dts != f.pts for f in frames), "the clip has no reordered frames"

    async def body() -> None:
        presenter, video, _clock, session_id, _model = await _live_session(server, case, knee_glb)
        track = await video.open_track(session_id, "headset", "headset_camera", push=params)
        got: list[Frame] = []

        async def watch() -> None:
            async for item in video.watch(track.track_id.value):
                if item.kind == "frame" and item.frame is not None:
                    got.append(item.frame)
                    if len(got) == len(frames):
                        return

        task = asyncio.create_task(watch())
        await asyncio.sleep(0.2)
        await video.push(
            track.track_id.value, [PushedUnit(f.data, f.pts, f.keyframe, dts=f.dts) for f in frames]
        )
        await asyncio.wait_for(task, 20)
        assert [(f.pts, f.dts, f.data) for f in got] == [(f.pts, f.dts, f.data) for f in frames]
        await presenter.close()
        await video.close()

    run(body())


def test_a_recording_keeps_what_was_stamped_before_its_stop(
    server: TestServer, case: str, knee_glb: Path
) -> None:
    """An intent may carry a time up to 1 s in the past. One stamped before StopRecording
    but arriving after it is in the recording, so the replay's last moments show what live
    viewers saw; one stamped after the stop is not."""

    async def body() -> None:
        presenter, video, clock, session_id, model_id = await _live_session(server, case, knee_glb)
        info = await video.start_recording(session_id)
        acted = clock.now()  # the presenter acts; its intent is on the way
        stop = asyncio.create_task(video.stop_recording(session_id))
        await asyncio.sleep(0.3)  # the stop has reached the server
        late = await presenter.commit_anchor(model_id, pose_for(5), t_ns=acted)
        after = await presenter.commit_anchor(model_id, pose_for(6))  # stamped now
        stopped = await stop
        assert acted < stopped.stopped_t_ns
        recording = Recording.open(server.data / "recordings" / info.recording_id.value)
        kept = {e.seq: e for e in recording.events()}
        assert late in kept and kept[late].t_ns == acted
        assert after not in kept
        await presenter.close()
        await video.close()

    run(body())
