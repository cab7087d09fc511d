"""Video ingest (holo.video.ingest) and the burned-in test card (holo.testing.testcard), against
real PyAV/FFmpeg: the committed sample video, files made here, MPEG-TS over UDP and RTSP
(FFmpeg listening, a PyAV RTSP muxer publishing) on localhost, and pushed access units.

Every picture is a test card, so decoding what ingest produced and reading its barcode
proves which source frame each output frame is.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.codeccontext import VideoCodecContext

from holo.errors import InvalidRequestError, PreconditionError, VideoError
from holo.testing.testcard import MAX_INDEX, make_test_card, read_test_card
from holo.video.frames import CameraPose, CodecParams, Frame, Intrinsics, PushedUnit
from holo.video.ingest import open_source
from holo.video.push import PushSource

pytestmark = pytest.mark.timeout(60)

SAMPLE_VIDEO = Path(__file__).resolve().parents[1] / "sample_data" / "video" / "operative.mp4"
T0 = 1_800_000_000_000_000_000  # a session clock reading, ns
N, FPS, GOP = 300, 30, 30


def fixed_clock() -> int:
    return T0


def t_expected(pts: int, time_base: Fraction, t0: int = T0, pts0: int = 0) -> int:
    return t0 + round((pts - pts0) * time_base * 10**9)


@pytest.fixture(scope="module")
def sample_packets() -> list[av.Packet]:
    """The sample video's packets as PyAV demuxes them (flush packet left out)."""
    assert SAMPLE_VIDEO.is_file(), "the sample video is missing: run `make sample-data`"
    with av.open(str(SAMPLE_VIDEO)) as container:
        return [p for p in container.demux(container.streams.video[0]) if p.size]


def decode(params: CodecParams, frames: list[Frame]) -> list[av.VideoFrame]:
    """Decode ingested frames as a viewer would: extradata first, then the data as-is."""
    ctx = av.CodecContext.create(params.codec, "r")
    assert isinstance(ctx, VideoCodecContext)
    if params.extradata:
        ctx.extradata = params.extradata
    pictures: list[av.VideoFrame] = []
    for frame in frames:
        packet = av.Packet(frame.data)
        packet.pts, packet.dts = frame.pts, frame.dts
        pictures += ctx.decode(packet)
    return pictures + ctx.decode(None)


def card_numbers(pictures: list[av.VideoFrame]) -> list[int]:
    return [read_test_card(p.to_ndarray(format="rgb24")) for p in pictures]


def encode_cards(
    path: Path, codec: str, n: int, *, fmt: str | None = None, size: tuple[int, int] = (160, 120)
) -> Path:
    """A file of test cards 0..n-1 at 30 fps, pts = frame number (in the stream time base)."""
    options = {"bf": "2"} if codec == "mpeg4" else {}
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=FPS, options=options)
        stream.width, stream.height = size
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(make_test_card(i, *size), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def collect(source_frames: Iterator[Frame], errors: list[BaseException]) -> list[Frame]:
    out: list[Frame] = []
    try:
        out.extend(source_frames)
    except BaseException as err:
        errors.append(err)
    return out


# ---------------------------------------------------------------------------------------------
# Test card
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(64, 48), (320, 240), (1280, 720), (1920, 1080)])
@pytest.mark.parametrize("index", [0, 1, 299, 123456, MAX_INDEX])
def test_test_card_reads_back_at_any_size(index: int, size: tuple[int, int]) -> None:
    card = make_test_card(index, *size)
    assert card.shape == (size[1], size[0], 3) and card.dtype == np.uint8
    assert read_test_card(card) == index


def test_test_card_survives_scaling_and_strong_h264() -> None:
    ctx = av.CodecContext.create("libx264", "w")
    assert isinstance(ctx, VideoCodecContext)
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = 320, 240, "yuv420p", Fraction(1, 30)
    ctx.options = {"crf": "40", "bf": "0", "threads": "1"}
    packets = []
    for i in range(45):
        frame = av.VideoFrame.from_ndarray(make_test_card(i, 320, 240), format="rgb24")
        frame.pts = i
        packets += ctx.encode(frame)
    packets += ctx.encode(None)
    dec = av.CodecContext.create("h264", "r")
    pictures = [p for packet in packets for p in dec.decode(packet)] + dec.decode(None)
    assert card_numbers(pictures) == list(range(45))
    # Scaled up to 1080p (another aspect ratio) after compression.
    big = [p.reformat(1920, 1080, "rgb24").to_ndarray() for p in pictures[::9]]
    assert [read_test_card(b) for b in big] == list(range(0, 45, 9))


def test_test_card_refuses_a_misread_and_a_non_card() -> None:
    card = make_test_card(1234, 320, 240)
    card[:30, 100:110] = 255 - card[:30, 100:110]  # flip one data block
    with pytest.raises(ValueError, match="checksum failed"):
        read_test_card(card)
    with pytest.raises(ValueError, match="no test card barcode"):
        read_test_card(np.full((240, 320, 3), 128, np.uint8))
    with pytest.raises(ValueError, match="outside"):
        make_test_card(MAX_INDEX + 1, 320, 240)


# ---------------------------------------------------------------------------------------------
# The sample video, passed through
# ---------------------------------------------------------------------------------------------
def test_sample_video_is_passed_through_with_pts_stamps(
    sample_packets: list[av.Packet],
) -> None:
    intrinsics = Intrinsics(300.0, 300.0, 160.0, 120.0)
    with open_source(
        str(SAMPLE_VIDEO), clock_ns=fixed_clock, realtime=False, intrinsics=intrinsics
    ) as source:
        params = source.params
        frames = list(source.frames())
    tb = Fraction(1, 30)
    assert (params.codec, params.width, params.height, params.time_base) == ("h264", 320, 240, tb)
    assert params.frame_rate == 30
    with av.open(str(SAMPLE_VIDEO)) as container:
        assert params.extradata == container.streams.video[0].codec_context.extradata
    assert params.extradata[0] == 1  # avcC, as MP4 stores it
    assert len(frames) == len(sample_packets) == N
    for k, (frame, packet) in enumerate(zip(frames, sample_packets, strict=True)):
        assert frame.data == bytes(packet)
        assert (frame.index, frame.pts, frame.dts, frame.duration) == (k, k, k, 1)
        assert frame.t_ns == T0 + k * 10**9 // 30 + (1 if k % 3 == 2 else 0)  # rounded
        assert frame.t_ns == t_expected(k, tb)
        assert frame.keyframe == (k % GOP == 0) == packet.is_keyframe
        assert frame.intrinsics == intrinsics and frame.pose is None


def test_sample_video_decodes_to_its_frame_numbers() -> None:
    source = open_source(f"file:{SAMPLE_VIDEO}", clock_ns=fixed_clock, realtime=False)
    frames = list(source.frames())
    pictures = decode(source.params, frames)
    assert card_numbers(pictures) == [p.pts for p in pictures] == list(range(N))
    # The generator's SEI message carries the number too (uuid, then "frame=N").
    sei = [
        [bytes(sd)[16:] for sd in p.side_data if sd.type.name == "SEI_UNREGISTERED"]
        for p in pictures
    ]
    assert all(f"frame={k}".encode() in texts for k, texts in enumerate(sei))


def test_loop_continues_pts_and_time_monotonic(sample_packets: list[av.Packet]) -> None:
    source = open_source(str(SAMPLE_VIDEO), clock_ns=fixed_clock, loop=True, realtime=False)
    frames: list[Frame] = []
    for frame in source.frames():
        frames.append(frame)
        if len(frames) == 2 * N + 50:
            source.close()
    assert len(frames) == 2 * N + 50  # close() ends the iteration at the next packet
    assert [f.index for f in frames] == [f.pts for f in frames] == list(range(2 * N + 50))
    assert [f.t_ns for f in frames] == [t_expected(k, Fraction(1, 30)) for k in range(2 * N + 50)]
    assert all(f.data == bytes(sample_packets[f.pts % N]) for f in frames)
    assert [f.pts for f in frames if f.keyframe] == list(range(0, 2 * N + 50, GOP))


def test_realtime_pacing_never_yields_a_frame_before_its_time() -> None:
    source = open_source(str(SAMPLE_VIDEO), clock_ns=time.monotonic_ns)
    frames, seen = [], []
    for frame in source.frames():
        seen.append(time.monotonic_ns())
        frames.append(frame)
        if len(frames) == 10:
            break
    source.close()
    t0 = frames[0].t_ns
    assert [f.t_ns - t0 for f in frames] == [round(k * 10**9 / 30) for k in range(10)]
    assert all(s >= f.t_ns for s, f in zip(seen, frames, strict=True))
    assert seen[-1] - seen[0] >= frames[-1].t_ns - t0


def test_close_from_another_thread_ends_a_paced_iteration() -> None:
    source = open_source(str(SAMPLE_VIDEO), clock_ns=time.monotonic_ns)
    threading.Timer(0.2, source.close).start()
    frames = list(source.frames())  # would take 10 s without the close
    assert 1 <= len(frames) < 30
    with pytest.raises(PreconditionError, match="already called"):
        source.frames()


def test_raw_h264_without_timestamps_is_counted_in_frame_durations(
    tmp_path: Path, sample_packets: list[av.Packet]
) -> None:
    raw = tmp_path / "camera.h264"
    with av.open(str(SAMPLE_VIDEO)) as src, av.open(str(raw), "w", format="h264") as out:
        template = src.streams.video[0]
        stream = out.add_stream_from_template(template)
        for packet in src.demux(template):
            if packet.size:
                packet.stream = stream
                out.mux(packet)
    source = open_source(str(raw), clock_ns=fixed_clock, realtime=False)
    frames = list(source.frames())
    tb = source.params.time_base
    step = frames[1].pts - frames[0].pts
    assert step * tb == Fraction(1, 30)
    assert [f.pts for f in frames] == [k * step for k in range(N)]
    assert frames[-1].t_ns == t_expected(frames[-1].pts, tb)
    assert card_numbers(decode(source.params, frames)) == list(range(N))


# ---------------------------------------------------------------------------------------------
# Transcoding
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("codec", "name"), [("mpeg4", "clip.mp4"), ("mjpeg", "clip.avi")])
def test_other_codecs_are_transcoded_to_h264_keeping_pts(
    tmp_path: Path, codec: str, name: str
) -> None:
    path = encode_cards(tmp_path / name, codec, 75)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == codec
        tb = stream.time_base
        assert tb is not None
        source_pts = sorted(p.pts for p in container.demux(stream) if p.size and p.pts is not None)
    source = open_source(str(path), clock_ns=fixed_clock, realtime=False)
    assert (source.params.codec, source.params.width, source.params.height) == ("h264", 160, 120)
    assert source.params.time_base == tb
    frames = list(source.frames())
    assert [f.pts for f in frames] == source_pts  # presentation order, no B-frames out
    assert [f.t_ns for f in frames] == [t_expected(p, tb, pts0=source_pts[0]) for p in source_pts]
    assert [f.index for f in frames if f.keyframe] == [0, 30, 60]  # GOP of 1 s, not every I
    pictures = decode(source.params, frames)
    assert card_numbers(pictures) == list(range(75))


# ---------------------------------------------------------------------------------------------
# Live sources
# ---------------------------------------------------------------------------------------------
def _publish(url: str, fmt: str, count: int, options: dict[str, str]) -> None:
    """Send the sample's first packets in real time, once the receiver is listening."""
    time.sleep(0.3)
    with av.open(str(SAMPLE_VIDEO)) as src:
        template = src.streams.video[0]
        # Packets of its own: the bitstream filter takes ownership of what it is given.
        packets = [p for p in src.demux(template) if p.size][:count]
        with av.open(url, "w", format=fmt, options=options) as out:
            stream = out.add_stream_from_template(template)
            annexb = av.bitstream.BitStreamFilterContext("h264_mp4toannexb", template)
            start = time.monotonic()
            for packet in packets:
                assert packet.pts is not None
                while time.monotonic() - start < packet.pts / 30:
                    time.sleep(0.002)
                for q in annexb.filter(packet) if fmt == "mpegts" else [packet]:
                    q.stream = stream
                    out.mux(q)
            time.sleep(0.2)


# FFmpeg blocks in C: the thread method ends a hung run, where a signal could not.
@pytest.mark.timeout(30, method="thread")
def test_mpegts_over_udp() -> None:
    port = free_port(socket.SOCK_DGRAM)
    url = f"udp://127.0.0.1:{port}"
    sender = threading.Thread(
        target=_publish,
        args=(f"{url}?pkt_size=1316", "mpegts", 45, {}),
    )
    sender.start()
    before = time.time_ns()
    source = open_source(url, clock_ns=time.time_ns, timeout_s=1.5)
    assert source.params.codec == "h264" and source.params.time_base == Fraction(1, 90000)
    errors: list[BaseException] = []
    frames = collect(source.frames(), errors)  # ends when the sender has been silent 1.5 s
    sender.join()
    assert len(errors) == 1 and isinstance(errors[0], VideoError)
    assert "no data from udp://" in str(errors[0])
    assert len(frames) == 45
    tb = source.params.time_base
    pts0 = frames[0].pts
    assert [f.t_ns for f in frames] == [t_expected(f.pts, tb, frames[0].t_ns, pts0) for f in frames]
    assert all(b.pts - a.pts == 3000 for a, b in itertools.pairwise(frames))
    assert before <= frames[0].t_ns <= time.time_ns()
    assert card_numbers(decode(source.params, frames)) == list(range(45))


@pytest.mark.timeout(30, method="thread")
@pytest.mark.parametrize(
    ("skew_s", "anchored_on"),
    [(20, "the publisher's wall clock"), (3600, "the session clock")],
)
def test_rtsp_listen_with_a_publisher_anchors_on_start_time_realtime(
    skew_s: int, anchored_on: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The session clock runs skew_s ahead of wall time. Within MAX_REALTIME_SKEW_NS the
    # RTCP wall-clock anchor is trusted as is; an hour off, it is ignored with a warning.
    port = free_port(socket.SOCK_STREAM)
    url = f"rtsp://127.0.0.1:{port}/live"
    opts = {"rtsp_transport": "tcp"}
    sender = threading.Thread(target=_publish, args=(url, "rtsp", 45, opts))
    sender.start()
    sent = time.time_ns()
    skew = skew_s * 10**9

    def clock() -> int:
        return time.time_ns() + skew

    source = open_source(url, clock_ns=clock, options={**opts, "rtsp_flags": "listen"})
    errors: list[BaseException] = []
    frames = collect(source.frames(), errors)  # the publisher's TEARDOWN ends the stream
    sender.join()
    assert not errors
    tb = source.params.time_base
    assert source.params.codec == "h264" and tb == Fraction(1, 90000)
    assert len(frames) == 45
    # pts 0 was captured at start_time_realtime (RTCP): t_ns = that + pts * time_base.
    anchor = frames[0].t_ns - round(frames[0].pts * tb * 10**9)
    assert [f.t_ns for f in frames] == [t_expected(f.pts, tb, anchor) for f in frames]
    expected_anchor = sent if skew_s == 20 else sent + skew
    assert abs(anchor - expected_anchor) < 2 * 10**9, anchored_on
    assert ("ignoring start_time_realtime" in caplog.text) == (skew_s == 3600)
    assert all(b.pts - a.pts == 3000 for a, b in itertools.pairwise(frames))
    assert card_numbers(decode(source.params, frames)) == list(range(45))


# ---------------------------------------------------------------------------------------------
# Pushed frames
# ---------------------------------------------------------------------------------------------
def sample_push_source(**kwargs: object) -> PushSource:
    with av.open(str(SAMPLE_VIDEO)) as container:
        extradata = container.streams.video[0].codec_context.extradata or b""
    return PushSource("h264", 320, 240, extradata, Fraction(1, 30), clock_ns=fixed_clock, **kwargs)  # type: ignore[arg-type]


def test_push_passes_the_sample_through(sample_packets: list[av.Packet]) -> None:
    source = sample_push_source()
    consumed: list[Frame] = []
    consumer = threading.Thread(target=lambda: consumed.extend(source.frames()))
    consumer.start()
    pose = CameraPose((0.1, 1.6, -0.3), (0.0, 0.0, 0.0, 1.0))
    own = Intrinsics(290.0, 291.0, 161.0, 119.0)
    returned = []
    for packet in sample_packets:
        assert packet.pts is not None
        extra = {"pose": pose, "intrinsics": own} if packet.pts == 7 else {}
        returned.append(
            source.push(PushedUnit(bytes(packet), packet.pts, packet.is_keyframe, **extra))
        )
    source.close()
    consumer.join(5)
    assert consumed == returned and len(returned) == N
    assert [f.t_ns for f in returned] == [t_expected(k, Fraction(1, 30)) for k in range(N)]
    assert all(f.data == bytes(p) for f, p in zip(returned, sample_packets, strict=True))
    assert returned[7].pose == pose and returned[7].intrinsics == own
    assert returned[8].pose is None
    assert card_numbers(decode(source.params, returned)) == list(range(N))


def test_push_capture_time_is_taken_as_stated(sample_packets: list[av.Packet]) -> None:
    source = sample_push_source()
    first = source.push(PushedUnit(bytes(sample_packets[0]), 0, True, capture_t_ns=5_000))
    second = source.push(PushedUnit(bytes(sample_packets[1]), 1, False))
    third = source.push(PushedUnit(bytes(sample_packets[2]), 2, False, capture_t_ns=77_000_000))
    assert (first.t_ns, second.t_ns, third.t_ns) == (5_000, 5_000 + 33_333_333, 77_000_000)


def test_push_mjpeg_is_transcoded() -> None:
    enc = av.CodecContext.create("mjpeg", "w")
    assert isinstance(enc, VideoCodecContext)
    enc.width, enc.height, enc.pix_fmt, enc.time_base = 160, 120, "yuvj420p", Fraction(1, 30)
    source = PushSource("mjpeg", 160, 120, b"", Fraction(1, 30), clock_ns=fixed_clock)
    assert source.params.codec == "h264" and source.params.extradata
    frames = []
    for i in range(40):
        picture = av.VideoFrame.from_ndarray(make_test_card(i, 160, 120), format="rgb24")
        picture = picture.reformat(format="yuvj420p")
        picture.pts = i
        (packet,) = enc.encode(picture)
        frames.append(source.push(PushedUnit(bytes(packet), i, True)))
    assert [f.pts for f in frames] == list(range(40))
    assert [f.index for f in frames if f.keyframe] == [0, 30]
    assert card_numbers(decode(source.params, frames)) == list(range(40))


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((b"", 1, False), {}, "non-empty bytes"),
        (("abc", 1, False), {}, "non-empty bytes"),
        ((b"x", 1.5, False), {}, "pts must be an int"),
        ((b"x", 1, "yes"), {}, "keyframe must be a bool"),
        ((b"x", 0, False), {}, "not after the previous"),
        ((b"x", -3, False), {}, "not after the previous"),
        ((b"x", 2, False), {"dts": 3}, "is after pts"),
        ((b"x", 2, False), {"pose": (0, 0, 0)}, "CameraPose"),
        ((b"x", 2, False), {"intrinsics": [1, 2, 3, 4]}, "Intrinsics"),
        ((b"x", 2, False), {"capture_t_ns": 1.0}, "capture_t_ns must be an int"),
    ],
)
def test_bad_pushes_are_refused(
    sample_packets: list[av.Packet], args: tuple[object, ...], kwargs: dict[str, object], match: str
) -> None:
    source = sample_push_source()
    source.push(PushedUnit(bytes(sample_packets[0]), 0, True))
    with pytest.raises(InvalidRequestError, match=match):
        source.push(PushedUnit(*args, **kwargs))  # type: ignore[arg-type]
    source.push(PushedUnit(bytes(sample_packets[1]), 1, False))  # a refused push changes nothing


def test_push_state_errors(sample_packets: list[av.Packet]) -> None:
    source = sample_push_source()
    with pytest.raises(InvalidRequestError, match="first push must be a keyframe"):
        source.push(PushedUnit(bytes(sample_packets[1]), 1, False))
    source.close()
    with pytest.raises(PreconditionError, match="closed"):
        source.push(PushedUnit(bytes(sample_packets[0]), 0, True))
    assert list(source.frames()) == []
    with pytest.raises(InvalidRequestError, match="cannot be decoded"):
        PushSource("nonesuch", 320, 240, b"", Fraction(1, 30), clock_ns=fixed_clock)
    with pytest.raises(InvalidRequestError, match="time_base"):
        PushSource("h264", 320, 240, b"", 1 / 30, clock_ns=fixed_clock)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="width"):
        PushSource("h264", 0, 240, b"", Fraction(1, 30), clock_ns=fixed_clock)


def test_push_queue_drops_the_oldest_when_nobody_consumes(
    sample_packets: list[av.Packet],
) -> None:
    source = sample_push_source(max_pending=10)
    for packet in sample_packets[:25]:
        assert packet.pts is not None
        source.push(PushedUnit(bytes(packet), packet.pts, packet.is_keyframe))
    source.close()
    assert source.dropped == 15
    assert [f.index for f in source.frames()] == list(range(15, 25))


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors, nothing hangs
# ---------------------------------------------------------------------------------------------
def _wav(path: Path) -> Path:
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: d / "missing.mp4", "does not exist"),
        (
            lambda d: (d / "garbage.mp4").write_bytes(bytes(range(256)) * 64) and d / "garbage.mp4",
            "cannot open video source",
        ),
        (
            lambda d: (
                (d / "cut.mp4").write_bytes(SAMPLE_VIDEO.read_bytes()[:40_000]) and d / "cut.mp4"
            ),
            "cannot open video source",
        ),
        (
            lambda d: (d / "notes.txt").write_text("no video here\n") and d / "notes.txt",
            "cannot open video source",
        ),
        (lambda d: _wav(d / "tone.wav"), "has no video stream"),
    ],
    ids=["missing", "garbage", "truncated", "text", "audio-only"],
)
def test_unreadable_files_raise_video_error(tmp_path: Path, make: object, match: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(VideoError, match=match) as info:
        open_source(str(path), clock_ns=fixed_clock)
    assert info.value.url == str(path)
    assert "\n" not in str(info.value)


def test_a_file_cut_inside_its_media_data_ends_cleanly(tmp_path: Path) -> None:
    # moov first (faststart), then a cut through the frames: the frames before the cut
    # come out whole, then the stream ends (or reports the damage), it never hangs.
    whole = tmp_path / "whole.mp4"
    with av.open(str(SAMPLE_VIDEO)) as src:
        template = src.streams.video[0]
        with av.open(str(whole), "w", options={"movflags": "faststart"}) as out:
            stream = out.add_stream_from_template(template)
            for packet in src.demux(template):
                if packet.size:
                    packet.stream = stream
                    out.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    source = open_source(str(cut), clock_ns=fixed_clock, realtime=False)
    errors: list[BaseException] = []
    frames = collect(source.frames(), errors)
    assert 0 < len(frames) < N
    assert all(isinstance(e, VideoError) for e in errors)


def test_bad_urls_and_devices() -> None:
    with pytest.raises(InvalidRequestError, match="unsupported scheme 'gopher'"):
        open_source("gopher://camera/1", clock_ns=fixed_clock)
    with pytest.raises(InvalidRequestError, match="empty"):
        open_source("  ", clock_ns=fixed_clock)
    with pytest.raises(InvalidRequestError, match="files only"):
        open_source("udp://127.0.0.1:9", clock_ns=fixed_clock, loop=True)
    with pytest.raises(VideoError, match="capture device /dev/video-holo-none does not exist"):
        open_source("v4l2:/dev/video-holo-none", clock_ns=fixed_clock)


def test_a_silent_stream_times_out() -> None:
    url = f"udp://127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
    start = time.monotonic()
    with pytest.raises(VideoError, match=r"sent nothing within 0\.5 s"):
        open_source(url, clock_ns=fixed_clock, timeout_s=0.5)
    assert time.monotonic() - start < 5


def test_a_protocol_this_ffmpeg_lacks_is_named() -> None:
    """PyAV's own FFmpeg build has no SRT (libsrt): the error says so and what to do."""
    try:
        av.open("srt://127.0.0.1:9?mode=caller", timeout=0.5)
    except av.error.ProtocolNotFoundError:
        pass
    except Exception:
        pytest.skip("this FFmpeg has SRT; nothing to refuse")
    with pytest.raises(VideoError, match=r"has no srt:// protocol; relay the stream"):
        open_source("srt://127.0.0.1:9?mode=caller", clock_ns=time.monotonic_ns)
