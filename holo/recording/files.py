"""Session recordings: every video track as received, the durable events and the pointers.

A recording is a directory::

    recording.json              what was recorded (atomic; rewritten by add_track and close)
    tracks/<track_id>.mkv       the track's access units, remuxed into Matroska, never re-encoded
    tracks/<track_id>.index.jsonl  one line per frame: session time, the source's pts/dts, pose
    events.jsonl                Event.encode() lines, in seq order
    ephemeral.jsonl             head pose / pointer / drag updates, each with its t_ns

The index is the source of truth for time: Matroska keeps only a millisecond pts per block
(no dts), so ``Frame.t_ns``, ``pts`` and ``dts`` come back exactly from the index, and the
container is paired with it in decode order (checked against the millisecond pts).

Bytes. Length-prefixed input (from MP4/MKV, with avcC/hvcC extradata) is stored and read back
byte for byte. Annex B input (MPEG-TS, RTP; Annex B or empty extradata) is rewritten by
FFmpeg's Matroska muxer, which has no way to store start codes: each start code
(``00 00 01`` or ``00 00 00 01``) becomes a 4-byte big-endian NAL length, the NAL units
themselves are unchanged and in order (in-band SPS/PPS/VPS, SEI and AUD included), and the
track's extradata becomes an avcC/hvcC record built from the Annex B extradata or, when that
is empty, from the parameter sets in the first keyframe. :meth:`Recording.frames` returns
what the container holds, and ``TrackInfo.params.extradata`` is the record that decodes it;
``TrackInfo.bitstream`` says which form the recorder was given.

Crash safety. Every index, event and ephemeral line is flushed as it is written (a crash
loses at most the line being written; an unterminated last line is ignored with a warning).
Each frame gets its own Matroska cluster, and the file is flushed after every packet, so a
killed recorder loses at most the last frame's packet; the unfinalised file (no cues) still
reads. Lines are flushed to the OS, not fsynced, until :meth:`Recorder.close`, so a power cut
can lose more than a killed process.
"""

from __future__ import annotations

from holo.extras import need

need("video", "av", feature="recordings")

import base64
import bisect
import io
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, TypeVar

import av
import av.logging
from av.container import OutputContainer
from av.stream import Stream

from holo.atomic import atomic_path, fsync_dir
from holo.errors import RecordingError
from holo.session.records import EphemeralUpdate
from holo.session.state import Event
from holo.video.frames import PASSTHROUGH_CODECS, CameraPose, CodecParams, Frame, Intrinsics

__all__ = ["FORMAT", "Recorder", "Recording", "RecordingError", "TrackInfo"]

log = logging.getLogger(__name__)

#: Version of the recording.json layout.
FORMAT = 1

_TRACK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # a file name, never a path
# A cluster per frame (FFmpeg closes a cluster when the next packet starts one) and a flush
# after every packet: without these the muxer keeps up to 5 s / 5 MiB in memory.
_MKV_OPTIONS = {"cluster_size_limit": "0", "flush_packets": "1"}
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Index:
    """What pairs a track's container with its index: ``offset`` (ms) is the muxer's shift
    of a track that starts at a negative pts."""

    file: Path
    time_base: Fraction
    entries: list[dict[str, Any]]
    offset: int


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """One recorded track. ``params`` decodes the ``data`` that :meth:`Recording.frames`
    returns; ``bitstream`` is how the recorder received it: ``"avcc"`` (length-prefixed,
    returned byte-identical) or ``"annexb"`` (returned length-prefixed, see the module doc)."""

    track_id: str
    name: str
    kind: str
    params: CodecParams
    bitstream: str
    file: Path
    frame_count: int
    first_t_ns: int | None
    last_t_ns: int | None


def _bitstream(params: CodecParams) -> str:
    head = params.extradata[:4]
    if head[:1] == b"\x01":  # avcC / hvcC configurationVersion
        return "avcc"
    if not head or head[:3] == b"\0\0\1" or head == b"\0\0\0\1":
        return "annexb"
    raise RecordingError(
        f"{params.codec} extradata starts with {head.hex()}: neither avcC/hvcC nor Annex B; "
        "pass the extradata exactly as the source carried it"
    )


def _to_ms(value: int, time_base: Fraction) -> int:
    """``value`` in Matroska's millisecond time base, rounded as PyAV's
    av_packet_rescale_ts does (to nearest, halves away from zero)."""
    exact = value * time_base * 1000
    n, d = abs(exact.numerator), exact.denominator
    ms = (2 * n + d) // (2 * d)
    return ms if exact >= 0 else -ms


def _index_line(frame: Frame) -> bytes:
    line: dict[str, Any] = {"i": frame.index, "t": frame.t_ns, "pts": frame.pts}
    line.update(dts=frame.dts, k=int(frame.keyframe))
    if frame.duration:
        line["d"] = frame.duration
    if frame.intrinsics is not None:
        c = frame.intrinsics
        line["intr"] = [c.fx, c.fy, c.cx, c.cy]
    if frame.pose is not None:
        line["pose"] = {
            "position": list(frame.pose.position),
            "rotation": list(frame.pose.rotation),
        }
    if frame.metadata:
        line["meta"] = frame.metadata
    return json.dumps(line, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def _frame(entry: dict[str, Any], data: bytes) -> Frame:
    intr, pose = entry.get("intr"), entry.get("pose")
    e = entry
    return Frame(
        *(e["i"], e["t"], e["pts"], e.get("dts"), e.get("d", 0), bool(e["k"]), data),
        intrinsics=None if intr is None else Intrinsics(*map(float, intr)),
        pose=None if pose is None else CameraPose(tuple(pose["position"]), tuple(pose["rotation"])),
        metadata=dict(e.get("meta", {})),
    )


def _read_jsonl(path: Path, decode: Callable[[bytes], _T]) -> list[_T]:
    """Decode every line; an unterminated last line (torn by a crash) is dropped."""
    try:
        lines = path.read_bytes().split(b"\n")
    except FileNotFoundError as err:
        raise RecordingError(f"{path} is missing; the recording is incomplete", path=path) from err
    if lines[-1]:
        log.warning("%s: ignoring a torn last line (the recorder stopped mid-write)", path)
    out = []
    for number, line in enumerate(lines[:-1], 1):
        try:
            out.append(decode(line))
        except (ValueError, KeyError, TypeError) as err:
            raise RecordingError(
                f"{path} line {number} is damaged ({err!r}); remove the line to open the rest",
                path=path,
            ) from err
    return out


def _add_stream(container: OutputContainer, params: CodecParams) -> Stream:
    if not params.extradata:
        # No codec context: PyAV runs extract_extradata over the first packets and writes
        # the header once it has found the in-band parameter sets.
        stream = container.add_mux_stream(params.codec, width=params.width, height=params.height)
    else:
        # PyAV cannot set extradata on a codec-less mux stream, and add_stream() would open
        # an encoder that replaces it. add_stream_from_template() opens nothing, so take the
        # template from an empty raw demuxer and set size and extradata on the copy.
        with av.logging.Capture():  # the empty probe logs "could not find codec parameters"
            probe = av.open(io.BytesIO(b""), "r", format=params.codec)
        try:
            stream = container.add_stream_from_template(probe.streams.video[0], opaque=True)
        finally:
            probe.close()
        ctx = stream.codec_context
        ctx.width, ctx.height, ctx.extradata = params.width, params.height, params.extradata
    stream.time_base = params.time_base
    return stream


class _TrackWriter:
    def __init__(self, directory: Path, info: dict[str, Any], params: CodecParams) -> None:
        self.params = params
        self.file = directory / info["file"]
        self.index: IO[bytes] = open(directory / info["index"], "xb")  # noqa: SIM115
        self.container = av.open(
            str(self.file), "w", format="matroska", container_options=_MKV_OPTIONS
        )
        self.stream = _add_stream(self.container, params)
        self.count = 0
        self.last_index: int | None = None


class Recorder:
    """Write one session recording into ``directory``, which must not exist yet (or be empty).

    Parameters
    ----------
    directory
        The recording's folder; its parent must exist. Nothing is written outside it.
    started_t_ns
        Session-clock time the recording starts at (ns), as ``Frame.t_ns`` and ``Event.t_ns``.

    All methods are thread-safe (one lock; muxing a frame is a memory copy and a write).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        session_id: str,
        case_id: str,
        started_t_ns: int,
    ) -> None:
        self.directory = root = Path(directory)
        if not root.parent.is_dir():
            raise RecordingError(
                f"cannot record into {root}: {root.parent} does not exist", path=root
            )
        try:
            root.mkdir(exist_ok=True)
            if any(root.iterdir()):
                raise FileExistsError(root)
            (root / "tracks").mkdir()  # fails if another recorder got here first
        except (FileExistsError, NotADirectoryError) as err:
            raise RecordingError(
                f"{root} already exists and is not empty; record each session into a new folder",
                path=root,
            ) from err
        self._meta: dict[str, Any] = {
            "format": FORMAT,
            "session_id": session_id,
            "case_id": case_id,
            "started_t_ns": started_t_ns,
            "stopped_t_ns": None,
            "tracks": [],
        }
        self._tracks: dict[str, _TrackWriter] = {}
        self._events: IO[bytes] = open(root / "events.jsonl", "xb")  # noqa: SIM115
        self._ephemeral: IO[bytes] = open(root / "ephemeral.jsonl", "xb")  # noqa: SIM115
        self._last_seq: int | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._write_meta()

    def add_track(self, track_id: str, name: str, kind: str, params: CodecParams) -> None:
        """Start recording a track. ``kind`` is free text (``"endoscope"``, ``"room"``, ...)."""
        with self._lock:
            self._check_open()
            if not _TRACK_ID.fullmatch(track_id):
                raise RecordingError(f"track id {track_id!r} is not 1-64 of [A-Za-z0-9_-]")
            if track_id in self._tracks:
                raise RecordingError(f"track {track_id!r} is already being recorded")
            if params.codec not in PASSTHROUGH_CODECS or params.width <= 0 or params.height <= 0:
                raise RecordingError(
                    f"track {track_id!r}: cannot record {params.codec} {params.width}x"
                    f"{params.height}; record {sorted(PASSTHROUGH_CODECS)} with a real size"
                )
            info = {
                "track_id": track_id,
                "name": name,
                "kind": kind,
                "codec": params.codec,
                "width": params.width,
                "height": params.height,
                "time_base": str(params.time_base),
                "frame_rate": None if params.frame_rate is None else str(params.frame_rate),
                "bitstream": _bitstream(params),
                "extradata": base64.b64encode(params.extradata).decode(),
                "file": f"tracks/{track_id}.mkv",
                "index": f"tracks/{track_id}.index.jsonl",
            }
            # Index file first: a crash before recording.json lists the track leaves an orphan.
            self._tracks[track_id] = _TrackWriter(self.directory, info, params)
            self._meta["tracks"].append(info)
            self._write_meta()

    def write_frame(self, track_id: str, frame: Frame) -> None:
        """Remux one access unit (in decode order). Frames before the track's first keyframe
        cannot be decoded and are dropped."""
        with self._lock:
            self._check_open()
            track = self._tracks.get(track_id)
            if track is None:
                raise RecordingError(f"no track {track_id!r} in this recording; add_track it first")
            if track.last_index is not None and frame.index <= track.last_index:
                raise RecordingError(
                    f"track {track_id!r}: frame index {frame.index} after {track.last_index}; "
                    "write frames once each, in decode order"
                )
            if track.count == 0 and not frame.keyframe:
                log.debug(
                    "track %s: dropping frame %d before the first keyframe", track_id, frame.index
                )
                return
            line = _index_line(frame)
            packet = av.Packet(frame.data)
            packet.stream = track.stream
            packet.time_base = track.params.time_base
            packet.pts, packet.dts, packet.duration = frame.pts, frame.dts, frame.duration
            packet.is_keyframe = frame.keyframe
            try:
                track.container.mux(packet)
            except av.FFmpegError as err:
                raise RecordingError(
                    f"track {track_id!r}: frame {frame.index} could not be written to "
                    f"{track.file} ({err}); check its timestamps and the track's CodecParams",
                    path=track.file,
                ) from err
            if track.count == 0 and not track.file.exists():
                raise RecordingError(
                    f"track {track_id!r}: Annex B keyframe without SPS/PPS and no extradata; "
                    "pass the parameter sets in CodecParams.extradata",
                    path=track.file,
                )
            track.index.write(line)  # after the mux: an index line means the frame was accepted
            track.index.flush()
            track.count += 1
            track.last_index = frame.index

    def write_event(self, event: Event) -> None:
        """Append one durable event; ``seq`` must increase (a gap is logged, not refused)."""
        with self._lock:
            self._check_open()
            if self._last_seq is not None:
                if event.seq <= self._last_seq:
                    raise RecordingError(f"event seq {event.seq} after {self._last_seq}")
                if event.seq != self._last_seq + 1:
                    log.warning("recording misses events %d..%d", self._last_seq + 1, event.seq - 1)
            self._events.write(event.encode() + b"\n")
            self._events.flush()
            self._last_seq = event.seq

    def write_ephemeral(self, update: EphemeralUpdate) -> None:
        """Append one ephemeral value (its ``t_ns`` is session-clock time, ns)."""
        try:
            raw = update.to_json()
            line = json.dumps(raw, separators=(",", ":"), allow_nan=False).encode() + b"\n"
        except (AttributeError, TypeError, ValueError) as err:
            raise RecordingError(f"ephemeral update is not JSON-serialisable ({err})") from err
        with self._lock:
            self._check_open()
            self._ephemeral.write(line)
            self._ephemeral.flush()

    def close(self, stopped_t_ns: int) -> None:
        """Finalise the containers (cues, duration), fsync everything, record the stop time."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            failures = []
            for track_id, track in self._tracks.items():
                try:
                    track.container.close()
                except av.FFmpegError as err:
                    failures.append(f"{track_id}: {err}")
                if track.file.exists():  # a track that never got a keyframe has no file
                    with open(track.file, "rb") as mkv:
                        os.fsync(mkv.fileno())
                with track.index:
                    os.fsync(track.index.fileno())
            for fh in (self._events, self._ephemeral):
                with fh:
                    fh.flush()
                    os.fsync(fh.fileno())
            fsync_dir(self.directory / "tracks")
            self._meta["stopped_t_ns"] = stopped_t_ns
            self._write_meta()
            if failures:
                raise RecordingError(
                    f"{self.directory}: could not finalise {'; '.join(failures)}; "
                    "the frames written so far are readable",
                    path=self.directory,
                )

    def _check_open(self) -> None:
        if self._closed:
            raise RecordingError(f"recording {self.directory} is closed", path=self.directory)

    def _write_meta(self) -> None:
        with atomic_path(self.directory / "recording.json") as tmp:
            tmp.write_text(json.dumps(self._meta, indent=2) + "\n")


class Recording:
    """A recording opened for replay (:meth:`open`); also opens recordings whose recorder died."""

    def __init__(self, directory: Path, meta: dict[str, Any]) -> None:
        self.directory = directory
        self.session_id: str = meta["session_id"]
        self.case_id: str = meta["case_id"]
        self.started_t_ns: int = meta["started_t_ns"]
        #: False when the recorder never called close (stopped_t_ns is then last_t_ns).
        self.complete: bool = meta["stopped_t_ns"] is not None
        self.tracks: list[TrackInfo] = []
        self._index: dict[str, _Index] = {}
        self._events = _read_jsonl(directory / "events.jsonl", Event.decode)
        self._ephemeral = _read_jsonl(
            directory / "ephemeral.jsonl", lambda line: EphemeralUpdate.from_json(json.loads(line))
        )
        for info in meta["tracks"]:
            self._open_track(info)
        times = [e.t_ns for e in self._events] + [u.t_ns for u in self._ephemeral]
        times += [t for tr in self.tracks for t in (tr.first_t_ns, tr.last_t_ns) if t is not None]
        self.first_t_ns: int = min(times, default=self.started_t_ns)
        self.last_t_ns: int = max(times, default=self.started_t_ns)
        self.stopped_t_ns: int = meta["stopped_t_ns"] if self.complete else self.last_t_ns

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> Recording:
        root = Path(directory)
        if not root.is_dir():
            raise RecordingError(f"recording {root} does not exist; check the path", path=root)
        path = root / "recording.json"
        try:
            meta = json.loads(path.read_bytes())
            if meta["format"] != FORMAT:
                raise RecordingError(
                    f"{path} has format {meta['format']!r}, this holo reads {FORMAT}; "
                    "use a matching holo version",
                    path=path,
                )
            return cls(root, meta)
        except FileNotFoundError as err:
            raise RecordingError(
                f"{path} does not exist: {root} is not a recording folder", path=path
            ) from err
        except (ValueError, KeyError, TypeError) as err:
            raise RecordingError(
                f"{path} is damaged ({err!r}); it is written atomically, so restore it from "
                "a backup",
                path=path,
            ) from err

    @property
    def duration_ns(self) -> int:
        """``stopped_t_ns - started_t_ns``: the span a replay scrubber covers."""
        return self.stopped_t_ns - self.started_t_ns

    def track(self, track_id: str) -> TrackInfo:
        for info in self.tracks:
            if info.track_id == track_id:
                return info
        raise RecordingError(f"{self.directory} has no track {track_id!r}", path=self.directory)

    def events(self) -> list[Event]:
        return list(self._events)

    def ephemeral(self) -> list[EphemeralUpdate]:
        return list(self._ephemeral)

    def frames(self, track_id: str, from_t_ns: int | None = None) -> Iterator[Frame]:
        """The track's frames in decode order, from the last keyframe at or before
        ``from_t_ns`` (from the first frame when there is none; nothing when ``from_t_ns``
        is after the last frame's ``t_ns``)."""
        info, index = self.track(track_id), self._index[track_id]
        entries = index.entries
        start = 0
        if from_t_ns is not None and entries:
            if info.last_t_ns is not None and from_t_ns > info.last_t_ns:
                return iter(())
            keys = [p for p, e in enumerate(entries) if e["k"]]
            at = bisect.bisect_right([entries[p]["t"] for p in keys], from_t_ns)
            start = keys[at - 1] if at else 0
        return (_frame(entry, data) for entry, data in _pairs(index, start))

    def _open_track(self, info: dict[str, Any]) -> None:
        root, track_id = self.directory, info["track_id"]
        entries = _read_jsonl(root / info["index"], json.loads)
        file, tb = root / info["file"], Fraction(info["time_base"])
        extradata = base64.b64decode(info["extradata"])
        offset = 0
        if file.exists() and file.stat().st_size:
            try:
                with av.open(str(file)) as container:
                    stream = container.streams.video[0]
                    extradata = stream.codec_context.extradata or b""
                    first = next((p for p in container.demux(stream) if p.size), None)
            except (av.FFmpegError, IndexError) as err:
                raise RecordingError(
                    f"{file} is not a readable Matroska video file ({err}); the track is lost",
                    path=file,
                ) from err
            if entries and first is not None and first.pts is not None:
                offset = first.pts - _to_ms(entries[0]["pts"], tb)
            elif entries:
                log.warning("%s holds no frames; the recorder stopped before writing any", file)
                entries = []
        elif entries:
            raise RecordingError(
                f"{file} is missing but {info['index']} lists {len(entries)} frames; "
                "restore the file or delete the track from recording.json",
                path=file,
            )
        index = _Index(file, tb, entries, offset)
        if not self.complete and entries:
            index = _Index(file, tb, _surviving(index), offset)
        rate = None if info["frame_rate"] is None else Fraction(info["frame_rate"])
        params = CodecParams(info["codec"], info["width"], info["height"], extradata, tb, rate)
        times = [e["t"] for e in index.entries]
        first_t, last_t = (min(times), max(times)) if times else (None, None)
        self.tracks.append(
            TrackInfo(
                track_id,
                info["name"],
                info["kind"],
                params,
                info["bitstream"],
                file,
                len(times),
                first_t,
                last_t,
            )
        )
        self._index[track_id] = index


def _surviving(index: _Index) -> list[dict[str, Any]]:
    """Of an unfinished track, the index entries whose packets reached the container: read
    from the last keyframe whose packet is there to the end of the file (about one GOP)."""
    entries = index.entries
    for start in reversed([p for p, e in enumerate(entries) if e["k"]]):
        count = sum(1 for _ in _pairs(index, start, warn=False))
        if count:
            lost = len(entries) - start - count
            if lost:
                log.warning("%s: %d indexed frames never reached the file", index.file, lost)
            return entries[: start + count]
    return []


def _pairs(index: _Index, start: int, warn: bool = True) -> Iterator[tuple[dict[str, Any], bytes]]:
    """(index entry, packet bytes) from position ``start``: seek to the keyframe there, then
    pair the container's packets with the index in order, checking each millisecond pts."""
    file, entries = index.file, index.entries
    if not entries:
        return
    target = _to_ms(entries[start]["pts"], index.time_base) + index.offset
    for seek in (True, False) if start else (False,):
        position: int | None = None
        with av.open(str(file)) as container:
            stream = container.streams.video[0]
            if seek:
                container.seek(target, stream=stream, backward=True, any_frame=False)
            packets = container.demux(stream)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.FFmpegError as err:  # a cluster cut short by a crash
                    log.warning("%s ends in damaged data (%s); stopping there", file, err)
                    break
                if not packet.size:
                    continue  # the demuxer's end-of-stream flush packet
                if position is None:
                    if seek and not (packet.is_keyframe and packet.pts == target):
                        continue  # the seek landed on an earlier keyframe
                    position = start if seek else 0
                if position >= len(entries):
                    break  # a packet whose index line was lost in a crash
                if packet.pts != _to_ms(entries[position]["pts"], index.time_base) + index.offset:
                    raise RecordingError(
                        f"{file} and its index disagree at frame {position} (pts {packet.pts} "
                        "ms); the track cannot be replayed",
                        path=file,
                    )
                if position >= start:
                    yield entries[position], bytes(packet)
                position += 1
        if position is not None:
            if warn and position < len(entries):
                log.warning("%s holds %d of the %d indexed frames", file, position, len(entries))
            return
        # The seek did not land at or before the keyframe: read from the start instead.
