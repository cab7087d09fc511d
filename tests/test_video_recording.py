"""Session recordings (holo.recording.files) against real PyAV: H.264/HEVC encoded here with
libx264/libx265, demuxed from MP4 (length-prefixed + avcC/hvcC) and MPEG-TS (Annex B),
recorded, read back and decoded. Each frame's luma is 16 + 3 * its number, so a decode
identifies frames."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from holo.recording.files import Recorder, Recording, RecordingError
from holo.session.records import EphemeralUpdate, Ray
from holo.session.state import Event
from holo.video.frames import CameraPose, CodecParams, Frame, Intrinsics

W, H, N, GOP = 160, 120, 60, 15
T0 = 1_700_000_000_000_000_000  # session clock at the clip's first pts (ns)
HAVE_X265 = "libx265" in av.codecs_available


def _encode(path: Path, fmt: str, codec: str = "libx264", bframes: int = 0) -> Path:
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.gop_size = GOP
        stream.codec_context.max_b_frames = bframes
        if codec == "libx264":
            stream.options = {
                "keyint": str(GOP),
                "min-keyint": str(GOP),
                "scenecut": "0",
                "bframes": str(bframes),
            }
        else:
            stream.options = {
                "x265-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0:"
                f"bframes={bframes}:log-level=error"
            }
        for i in range(N):
            yuv = np.full((H * 3 // 2, W), 128, np.uint8)
            yuv[:H] = 16 + 3 * i
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _demux(path: Path) -> tuple[CodecParams, list[Frame]]:
    """A stand-in for ingest: the clip's packets as holo Frames, with pose and intrinsics."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ctx, tb = stream.codec_context, stream.time_base
        assert tb is not None
        params = CodecParams(
            ctx.name, ctx.width, ctx.height, ctx.extradata or b"", tb, Fraction(30)
        )
        packets = [p for p in container.demux(stream) if p.size]
    pts0 = min(p.pts for p in packets if p.pts is not None)
    frames = []
    for i, p in enumerate(packets):
        assert p.pts is not None
        frames.append(
            Frame(
                index=i,
                t_ns=T0 + round((p.pts - pts0) * tb * 10**9),
                pts=p.pts,
                dts=p.dts,
                duration=p.duration or 0,
                keyframe=p.is_keyframe,
                data=bytes(p),
                intrinsics=Intrinsics(200.0 + i / 7, 201.5, 80.25, 59.75) if i % 2 else None,
                pose=CameraPose((0.1 * i, 1.6, -0.3), (0.0, 0.0, 0.0, 1.0)) if i % 3 else None,
                metadata={"n": str(i)} if i % 5 == 0 else {},
            )
        )
    return params, frames


CLIPS = {  # name: (container format, encoder, B-frames)
    "h264-mp4": ("mp4", "libx264", 0),
    "h264-mp4-bframes": ("mp4", "libx264", 2),
    "h264-ts": ("mpegts", "libx264", 0),
    "h264-ts-bframes": ("mpegts", "libx264", 2),
    "hevc-mp4": ("mp4", "libx265", 0),
    "hevc-ts-bframes": ("mpegts", "libx265", 2),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[CodecParams, list[Frame]]]:
    folder = tmp_path_factory.mktemp("clips")
    out = {}
    for name, (fmt, codec, bframes) in CLIPS.items():
        if codec == "libx265" and not HAVE_X265:
            continue
        out[name] = _demux(_encode(folder / f"{name}.{fmt}", fmt, codec, bframes))
    return out


def _clip(clips: dict[str, tuple[CodecParams, list[Frame]]], name: str):
    if name not in clips:
        pytest.skip("this PyAV build has no libx265 encoder, so no HEVC clip to record")
    return clips[name]


def _record(folder: Path, params: CodecParams, frames: list[Frame]) -> Path:
    rec = Recorder(folder, session_id="s1", case_id="c1", started_t_ns=T0 - 10**9)
    rec.add_track("cam0", "Endoscope", "endoscope", params)
    for frame in frames:
        rec.write_frame("cam0", frame)
    rec.close(stopped_t_ns=frames[-1].t_ns + 10**9)
    return folder


def _numbers(params: CodecParams, frames: list[Frame]) -> list[int]:
    """Frame numbers of the decoded pictures, in presentation order."""
    ctx = av.CodecContext.create(params.codec, "r")
    ctx.extradata = params.extradata or None
    pictures = []
    for frame in frames:
        packet = av.Packet(frame.data)
        packet.pts, packet.dts = frame.pts, frame.dts
        pictures += ctx.decode(packet)
    pictures += ctx.decode(None)
    return [round((int(p.to_ndarray()[H // 2, W // 2]) - 16) / 3) for p in pictures]


def _nal_units(data: bytes, annexb: bool) -> list[bytes]:
    if annexb:  # a 4-byte start code is a zero byte + a 3-byte one
        units = data.split(b"\0\0\1")[1:]
        return [
            u[:-1] if u.endswith(b"\0") and n < len(units) - 1 else u for n, u in enumerate(units)
        ]
    units, at = [], 0
    while at < len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        units.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return units


@pytest.mark.parametrize("name", ["h264-mp4", "h264-mp4-bframes", "hevc-mp4"])
def test_length_prefixed_round_trip_is_byte_identical(clips, name, tmp_path):
    params, frames = _clip(clips, name)
    rec = Recording.open(_record(tmp_path / "rec", params, frames))
    (track,) = rec.tracks
    assert track.bitstream == "avcc" and track.params == params
    assert track.frame_count == N and (track.first_t_ns, track.last_t_ns) == (
        min(f.t_ns for f in frames),
        max(f.t_ns for f in frames),
    )
    back = list(rec.frames("cam0"))
    assert back == frames  # bytes, pts, dts, keyframe, t_ns, duration, intrinsics, pose, meta
    assert _numbers(track.params, back) == list(range(N))
    # The .mkv stands on its own: codec, size, frame count and keyframes.
    with av.open(str(track.file)) as mkv:
        stream = mkv.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.width) == (params.codec, W)
        assert stream.codec_context.height == H
        keys = [p.is_keyframe for p in mkv.demux(stream) if p.size]
    assert keys == [f.keyframe for f in frames] and sum(keys) == N // GOP


@pytest.mark.parametrize("name", ["h264-ts", "h264-ts-bframes", "hevc-ts-bframes"])
@pytest.mark.parametrize("extradata", ["annexb", "empty"])
def test_annexb_input_comes_back_length_prefixed_and_decodable(clips, name, extradata, tmp_path):
    params, frames = _clip(clips, name)
    assert params.extradata[:3] == b"\0\0\1" or params.extradata[:4] == b"\0\0\0\1"
    if extradata == "empty":  # parameter sets only in band, as from an RTP source
        params = CodecParams(params.codec, W, H, b"", params.time_base, params.frame_rate)
    rec = Recording.open(_record(tmp_path / "rec", params, frames))
    (track,) = rec.tracks
    assert track.bitstream == "annexb" and track.params.extradata[:1] == b"\1"  # avcC / hvcC
    back = list(rec.frames("cam0"))
    assert len(back) == N
    for sent, got in zip(frames, back, strict=True):
        # Start codes become 4-byte lengths; the NAL units are the same bytes, in order.
        assert _nal_units(got.data, annexb=False) == _nal_units(sent.data, annexb=True)
        assert (got.index, got.t_ns, got.pts, got.dts, got.keyframe, got.pose) == (
            sent.index,
            sent.t_ns,
            sent.pts,
            sent.dts,
            sent.keyframe,
            sent.pose,
        )
    assert _numbers(track.params, back) == list(range(N))


def test_b_frames_keep_decode_order_and_timestamps(clips, tmp_path):
    params, frames = clips["h264-mp4-bframes"]
    assert any(f.dts != f.pts for f in frames)
    assert [f.pts for f in frames] != sorted(f.pts for f in frames)  # decode != display order
    back = list(Recording.open(_record(tmp_path / "rec", params, frames)).frames("cam0"))
    assert [(f.index, f.pts, f.dts) for f in back] == [(f.index, f.pts, f.dts) for f in frames]


@pytest.mark.parametrize("name", ["h264-mp4", "h264-mp4-bframes"])
@pytest.mark.parametrize(
    ("when", "first"),
    [("before", 0), ("mid-gop", 15), ("on-keyframe", 30), ("last-frame", 45), ("after", None)],
)
def test_frames_from_t_start_at_last_keyframe(clips, name, when, first, tmp_path):
    params, frames = clips[name]
    by_number = sorted(frames, key=lambda f: f.pts)  # display order: frame number = position
    t = {
        "before": frames[0].t_ns - 5,
        "mid-gop": by_number[22].t_ns,
        "on-keyframe": by_number[30].t_ns,
        "last-frame": max(f.t_ns for f in frames),
        "after": max(f.t_ns for f in frames) + 1,
    }[when]
    rec = Recording.open(_record(tmp_path / "rec", params, frames))
    got = list(rec.frames("cam0", from_t_ns=t))
    if first is None:
        assert got == []
        return
    assert got[0].keyframe and got[0].index == first
    assert got == frames[first:]
    assert _numbers(params, got)[0] == first  # decodable from there


def test_events_ephemeral_and_recording_json(clips, tmp_path):
    params, frames = clips["h264-mp4"]
    folder = tmp_path / "rec"
    rec = Recorder(folder, session_id="s1", case_id="c1", started_t_ns=T0)
    rec.add_track("cam0", "Endoscope", "endoscope", params)
    events = [Event(seq, T0 + seq, "p1", "annotation_removed", f"a{seq}") for seq in (4, 5, 6)]
    updates = [
        EphemeralUpdate("p1", "pointer", T0 + k, Ray((0.0, 1.6, 0.0), (0.0, float(k), 1.0)))
        for k in range(5)
    ]
    for k, frame in enumerate(frames[:20]):
        rec.write_frame("cam0", frame)
        if k < len(events):
            rec.write_event(events[k])
        if k < len(updates):
            rec.write_ephemeral(updates[k])
    with pytest.raises(RecordingError, match="seq 5 after 6"):
        rec.write_event(events[1])
    rec.close(stopped_t_ns=T0 + 5 * 10**9)

    meta = json.loads((folder / "recording.json").read_text())
    assert {k: meta[k] for k in ("format", "session_id", "case_id", "started_t_ns")} == {
        "format": 1,
        "session_id": "s1",
        "case_id": "c1",
        "started_t_ns": T0,
    }
    assert meta["stopped_t_ns"] == T0 + 5 * 10**9
    (info,) = meta["tracks"]
    assert {k: info[k] for k in ("track_id", "name", "kind", "codec", "width", "height")} == {
        "track_id": "cam0",
        "name": "Endoscope",
        "kind": "endoscope",
        "codec": "h264",
        "width": W,
        "height": H,
    }
    assert (info["time_base"], info["frame_rate"], info["file"]) == (
        str(params.time_base),
        "30",
        "tracks/cam0.mkv",
    )
    lines = (folder / "tracks/cam0.index.jsonl").read_text().splitlines()
    assert json.loads(lines[1]) == {
        "i": 1,
        "t": frames[1].t_ns,
        "pts": frames[1].pts,
        "dts": frames[1].dts,
        "k": 0,
        "d": frames[1].duration,
        "intr": [200.0 + 1 / 7, 201.5, 80.25, 59.75],
        "pose": {"position": [0.1, 1.6, -0.3], "rotation": [0.0, 0.0, 0.0, 1.0]},
    }

    back = Recording.open(folder)
    assert back.events() == events and back.ephemeral() == updates
    assert (back.session_id, back.case_id, back.complete) == ("s1", "c1", True)
    assert (back.started_t_ns, back.stopped_t_ns) == (T0, T0 + 5 * 10**9)
    assert back.duration_ns == 5 * 10**9
    assert (back.first_t_ns, back.last_t_ns) == (T0, max(f.t_ns for f in frames[:20]))


CHILD = """
import os, pickle, sys, time
from holo.recording.files import Recorder
from holo.session.state import Event
params, frames, folder = pickle.load(open(sys.argv[1], "rb"))
rec = Recorder(folder, session_id="s1", case_id="c1", started_t_ns=frames[0].t_ns)
rec.add_track("cam0", "Endoscope", "endoscope", params)
for k, frame in enumerate(frames):
    rec.write_frame("cam0", frame)
    rec.write_event(Event(k + 1, frame.t_ns, "p1", "away", "p1"))
# What a kill in the middle of a write leaves behind: unterminated last lines.
for name in ("tracks/cam0.index.jsonl", "events.jsonl"):
    with open(os.path.join(folder, name), "ab") as fh:
        fh.write(b'{"i": 99, "t": 12')
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("name", ["h264-mp4-bframes", "h264-ts"])
def test_recorder_killed_mid_recording_still_opens(clips, name, tmp_path, caplog):
    params, frames = clips[name]
    sent = frames[:40]
    job = tmp_path / "job.pickle"
    job.write_bytes(pickle.dumps((params, sent, str(tmp_path / "rec"))))
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(job)], stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL

    with caplog.at_level(logging.WARNING, logger="holo.recording.files"):
        rec = Recording.open(tmp_path / "rec")
    assert "torn last line" in caplog.text
    assert not rec.complete
    (track,) = rec.tracks
    # Every indexed frame whose packet reached the file; the muxer still held the last one.
    assert track.frame_count == len(sent) - 1
    back = list(rec.frames("cam0"))
    want = sent[: track.frame_count]
    if track.bitstream == "avcc":
        assert back == want
    else:
        assert [(f.index, f.pts, f.t_ns) for f in back] == [(f.index, f.pts, f.t_ns) for f in want]
    shown = sorted(round((f.t_ns - T0) * 30 / 10**9) for f in want)  # frame numbers
    assert _numbers(track.params, back) == shown
    assert track.last_t_ns == max(f.t_ns for f in want)
    assert [e.seq for e in rec.events()] == list(range(1, 41))  # torn 41st line dropped
    latest = max(track.last_t_ns, *(e.t_ns for e in rec.events()))
    assert rec.stopped_t_ns == rec.last_t_ns == latest  # no stop recorded: the last t seen
    # No cues in the unfinished file: seeking still works.
    assert next(rec.frames("cam0", from_t_ns=sent[20].t_ns)).index == 15


def _one_line(err: pytest.ExceptionInfo[RecordingError], path: Path, *words: str) -> None:
    message = str(err.value)
    assert "\n" not in message and str(path) in message and err.value.path == path
    for word in words:
        assert re.search(word, message), message


def test_bad_recordings_fail_with_one_line_errors(clips, tmp_path):
    params, frames = clips["h264-mp4"]
    with pytest.raises(RecordingError) as err:
        Recording.open(tmp_path / "nowhere")
    _one_line(err, tmp_path / "nowhere", "does not exist")

    folder = _record(tmp_path / "rec", params, frames[:20])
    meta = folder / "recording.json"
    good = meta.read_bytes()
    meta.write_bytes(good[: len(good) // 2])
    with pytest.raises(RecordingError) as err:
        Recording.open(folder)
    _one_line(err, meta, "damaged", "restore")
    meta.unlink()
    with pytest.raises(RecordingError) as err:
        Recording.open(folder)
    _one_line(err, meta, "does not exist", "not a recording folder")

    meta.write_bytes(good)
    (folder / "tracks/cam0.mkv").unlink()
    with pytest.raises(RecordingError) as err:
        Recording.open(folder)
    _one_line(err, folder / "tracks/cam0.mkv", "missing", "restore")

    (folder / "tracks/cam0.mkv").write_bytes(b"not matroska")
    with pytest.raises(RecordingError) as err:
        Recording.open(folder)
    _one_line(err, folder / "tracks/cam0.mkv", "not a readable Matroska")

    index = folder / "tracks/cam0.index.jsonl"
    lines = index.read_bytes().split(b"\n")
    index.write_bytes(b"\n".join([lines[0], b"{garbage", *lines[1:]]))
    with pytest.raises(RecordingError) as err:
        Recording.open(folder)
    _one_line(err, index, "line 2 is damaged")


def test_recording_into_an_existing_folder_is_refused(clips, tmp_path):
    params, frames = clips["h264-mp4"]
    folder = _record(tmp_path / "rec", params, frames[:5])
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    with pytest.raises(RecordingError) as err:
        Recorder(folder, session_id="s2", case_id="c1", started_t_ns=0)
    _one_line(err, folder, "already exists", "new folder")
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    with pytest.raises(RecordingError) as err:
        Recorder(tmp_path / "no" / "rec", session_id="s2", case_id="c1", started_t_ns=0)
    _one_line(err, tmp_path / "no" / "rec", "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    Recorder(empty, session_id="s3", case_id="c1", started_t_ns=0).close(stopped_t_ns=0)
    assert Recording.open(empty).tracks == []


def test_recorder_refuses_bad_tracks_and_frames(clips, tmp_path):
    params, frames = clips["h264-mp4"]
    rec = Recorder(tmp_path / "rec", session_id="s1", case_id="c1", started_t_ns=0)
    with pytest.raises(RecordingError, match="not 1-64"):
        rec.add_track("../cam", "x", "room", params)
    with pytest.raises(RecordingError, match="neither avcC"):
        rec.add_track("cam0", "x", "room", CodecParams("h264", W, H, b"\x42", Fraction(1, 30)))
    rec.add_track("cam0", "x", "room", params)
    with pytest.raises(RecordingError, match="add_track it first"):
        rec.write_frame("cam1", frames[0])
    for frame in frames[1:4]:  # before the first keyframe: dropped, undecodable
        rec.write_frame("cam0", frame)
    rec.write_frame("cam0", frames[0])
    with pytest.raises(RecordingError, match="decode order"):
        rec.write_frame("cam0", frames[0])
    rec.close(stopped_t_ns=1)
    with pytest.raises(RecordingError, match="closed"):
        rec.write_frame("cam0", frames[1])
    assert [f.index for f in Recording.open(tmp_path / "rec").frames("cam0")] == [0]
