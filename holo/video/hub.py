"""The video side of a node: its sessions' tracks, their ingest, and recordings.

A track is fed by a source this node opens (:func:`holo.video.ingest.open_source`, read in a
thread of its own) or by frames a client pushes (:class:`holo.video.ingest.PushSource`);
either way the frames go to the track's :class:`holo.video.relay.Track` on the event loop.
A recording taps the session (every durable event and ephemeral value this node sees) and
every track of it, and writes them with :class:`holo.video.recording.Recorder`.

Tracks live on the node that ingests them (a viewer watches a track on that node); the
session itself may span nodes (its events reach every node through the bus). Transport-
neutral: the servicer in :mod:`holo.server.video_servicer` converts messages.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from holo.errors import (
    HoloError,
    InvalidRequestError,
    LimitError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    RecordingError,
)
from holo.session import SessionHub
from holo.session.state import Event
from holo.video.frames import CameraPose, CodecParams, Frame, Intrinsics
from holo.video.ingest import VideoSource, open_source
from holo.video.push import PushSource
from holo.video.recording import Recorder, Recording
from holo.video.relay import Track, ViewerLimits, check_track
from holo.video.replay import ReplaySession, is_replay

__all__ = ["PushedUnit", "SourceSpec", "VideoHub"]

logger = logging.getLogger(__name__)

#: URL schemes a presenter may ask the server to open, and the FFmpeg protocols each may use.
URL_SCHEMES = {
    "rtsp": "rtsp,rtp,udp,tcp",
    "rtsps": "rtsps,rtsp,rtp,udp,tcp,tls",
    "rtp": "rtp,udp",
    "srt": "srt,udp",
    "udp": "udp",
    "tcp": "tcp",
    "http": "http,tcp",
    "https": "https,http,tcp,tls",
}
MAX_PENDING_WRITES = 65536  # recorder calls queued for the disk (events and values too)
MAX_PENDING_BYTES = 256 << 20  # frame bytes queued: 25 s of 80 Mbit/s, minutes of a scope
MAX_HANDOFF = 60  # frames (2 s at 30 fps) an ingest thread may have waiting for the loop
_DEVICE = re.compile(r"/dev/video[0-9]{1,3}")
MAX_TRACKS_PER_SESSION = 8
MAX_REPLAYS = 16  # per node; each holds a pacing thread per track
REPLAY_IDLE_S = 60.0  # unwatched this long, a replay gives way to a new one
REPLAYS_PER_SUBJECT = 2


@dataclass(frozen=True)
class SourceSpec:
    """Where a track's frames come from: exactly one of ``file`` (relative to the node's
    media directory), ``url``, ``device`` or ``push`` (the codec a client will push)."""

    file: str = ""
    url: str = ""
    device: str = ""
    push: CodecParams | None = None
    loop: bool = False
    intrinsics: Intrinsics | None = None


class _Writer:
    """A recording written off the event loop: calls queue (bounded) for one thread.

    A track whose write fails (its file cannot grow: a full disk; or a stream the muxer
    refuses) stops being recorded, the others go on: ``failed_tracks`` says why. A frame
    the queue has no room for (a disk slower than the video) is dropped, and that track
    resumes at its next keyframe (``gaps`` counts these). An event or value that cannot be
    written stops the whole recording (``failed``). What was written stays readable
    (Matroska, flushed line by line)."""

    def __init__(self, recorder: Recorder, name: str) -> None:
        self.recorder = recorder
        self.failed = ""
        self.failed_tracks: dict[str, str] = {}
        self.gaps = 0
        self._queue: queue.Queue[tuple[str, tuple[Any, ...]] | None] = queue.Queue(
            MAX_PENDING_WRITES
        )
        self._bytes = 0  # frame bytes queued
        self._bytes_lock = threading.Lock()
        self._resume_at_key: set[str] = set()  # tracks that lost a frame to a full queue
        self._thread = threading.Thread(target=self._run, name=f"record {name}", daemon=True)
        self._thread.start()

    def put(self, method: str, *args: Any) -> None:
        if self.failed:
            return
        if method == "write_frame":
            track_id, frame = args
            if track_id in self.failed_tracks:
                return
            if track_id in self._resume_at_key:
                if not frame.keyframe:
                    return
                self._resume_at_key.discard(track_id)
            with self._bytes_lock:
                room = self._bytes + len(frame.data) <= MAX_PENDING_BYTES
                if room:
                    self._bytes += len(frame.data)
            if not room or self._queue.full():
                if room:
                    with self._bytes_lock:
                        self._bytes -= len(frame.data)
                self.gaps += 1
                self._resume_at_key.add(track_id)
                logger.warning(
                    "recording %s: the disk does not keep up; track %s resumes at its next "
                    "keyframe",
                    self._thread.name,
                    track_id,
                )
                return
        try:
            self._queue.put_nowait((method, args))
        except queue.Full:
            self._fail("the disk does not keep up with the session's events; it stopped")

    def _fail(self, why: str) -> None:
        if not self.failed:
            self.failed = why
            logger.error("recording %s failed: %s", self._thread.name, why)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            method, args = item
            track_id = args[0] if method in ("add_track", "write_frame") else None
            if method == "write_frame":
                with self._bytes_lock:
                    self._bytes -= len(args[1].data)
            if self.failed or (track_id is not None and track_id in self.failed_tracks):
                continue
            try:
                getattr(self.recorder, method)(*args)
            except Exception as err:
                if track_id is None:
                    self._fail(str(err))
                else:  # this track only: the others, the events and values go on
                    self.failed_tracks[track_id] = str(err)
                    logger.error(
                        "recording %s: track %s stopped: %s", self._thread.name, track_id, err
                    )

    def close(self, stopped_t_ns: int) -> None:
        """Drain what is queued, then finish the files (blocking: call it in a thread)."""
        self._queue.put(None)
        self._thread.join()
        try:
            self.recorder.close(stopped_t_ns)
        except Exception as err:
            self._fail(str(err))


@dataclass(frozen=True, slots=True)
class PushedUnit:
    """One access unit a client pushed; ``capture_t_ns`` 0 when it did not say."""

    data: bytes
    pts: int
    dts: int | None
    keyframe: bool
    capture_t_ns: int = 0
    intrinsics: Intrinsics | None = None
    pose: CameraPose | None = None


@dataclass
class _LiveRecording:
    recording_id: str
    session_id: str
    writer: _Writer
    directory: Path
    started_t_ns: int
    untap: list[Callable[[], None]] = field(default_factory=list)
    waiting_keyframe: set[str] = field(default_factory=set)
    events: int = 0


class VideoHub:
    """Tracks and recordings of the sessions this node serves."""

    def __init__(
        self,
        sessions: SessionHub,
        *,
        media_dir: Path,
        recordings_dir: Path,
        limits: ViewerLimits | None = None,
    ) -> None:
        self.sessions = sessions
        self.media_dir = media_dir
        self.recordings_dir = recordings_dir
        self.limits = limits or ViewerLimits()
        self.tracks: dict[str, Track] = {}  # live ones: an ended track is dropped
        self._sources: dict[str, VideoSource | PushSource] = {}
        self._owners: dict[str, str] = {}  # pushed track -> the subject that opened it
        self._opening: dict[str, int] = {}  # session -> tracks being opened (not yet listed)
        self._recording: dict[str, _LiveRecording] = {}  # session_id -> recording
        self._starting: set[str] = set()  # sessions whose recording is being set up
        self.replays: dict[str, ReplaySession] = {}
        self._replays_opening = 0

    # tracks ----------------------------------------------------------------------------

    def _source_url(self, spec: SourceSpec) -> tuple[str, bool, dict[str, str]]:
        """The path or URL to open, whether it is a file (paced, loopable), and the
        FFmpeg options that keep it to its own protocols."""
        given = [x for x in (spec.file, spec.url, spec.device) if x]
        if len(given) + (spec.push is not None) != 1:
            raise InvalidRequestError("a video source is exactly one of file, url, device or push")
        if spec.file:
            root = self.media_dir.resolve()
            path = (root / spec.file).resolve()
            if not path.is_relative_to(root):
                raise PermissionDeniedError(
                    f"video file {spec.file!r} is outside the media directory; give a path "
                    "relative to it (holo serve --media)"
                )
            if not path.is_file():
                raise NotFoundError("video file", spec.file)
            return str(path), True, {"protocol_whitelist": "file"}
        if spec.url:
            scheme = spec.url.split(":", 1)[0].lower()
            if scheme not in URL_SCHEMES:
                raise InvalidRequestError(
                    f"video URL {spec.url!r}: the scheme must be one of {', '.join(URL_SCHEMES)}"
                )
            # FFmpeg follows nested URLs (a playlist naming file:///...): only the
            # protocols of the scheme asked for may be opened.
            return spec.url, False, {"protocol_whitelist": URL_SCHEMES[scheme]}
        if not _DEVICE.fullmatch(spec.device):
            raise InvalidRequestError(
                f"capture device {spec.device!r}: give a V4L2 device such as /dev/video0"
            )
        return f"v4l2:{spec.device}", False, {}

    async def open_track(
        self, session_id: str, name: str, kind: str, spec: SourceSpec, subject: str = ""
    ) -> Track:
        """Start a track: its source opened (off the loop) and read by a thread of its own.
        ``subject`` (the caller's) is the only one who may push into a pushed track."""
        check_track(name, kind)
        live = await self.sessions.get(session_id)
        opening = self._opening.get(session_id, 0)
        if len(self.session_tracks(session_id)) + opening >= MAX_TRACKS_PER_SESSION:
            raise LimitError(
                f"session {session_id} has {MAX_TRACKS_PER_SESSION} live tracks; close one first"
            )
        self._opening[session_id] = opening + 1  # held across the awaits below
        try:
            return await self._open_track(live.session_id, name, kind, spec, subject)
        finally:
            self._opening[session_id] -= 1

    async def _open_track(
        self, session_id: str, name: str, kind: str, spec: SourceSpec, subject: str
    ) -> Track:
        clock = self.sessions.clock.now_ns
        track_id = f"trk-{secrets.token_hex(6)}"
        source: VideoSource | PushSource
        if spec.push is not None:
            p = spec.push
            source = PushSource(
                p.codec, p.width, p.height, p.extradata, p.time_base, clock_ns=clock
            )
            params = source.params
        else:
            url, is_file, options = self._source_url(spec)
            source = await asyncio.to_thread(
                open_source,
                url,
                clock_ns=clock,
                loop=spec.loop and is_file,
                # A file served over HTTP would be read flat out: paced like a file.
                realtime=True if is_file or url.lower().startswith("http") else None,
                options=options,
                intrinsics=spec.intrinsics,
            )
            params = source.params
        track = Track(track_id, session_id, name, kind, params, limits=self.limits)
        self.tracks[track_id] = track
        self._sources[track_id] = source
        if spec.push is not None:
            self._owners[track_id] = subject
        track.on_end.append(self._forget)
        recording = self._recording.get(session_id)
        if recording is not None:
            self._record_track(recording, track)
        self._pump(track, source)  # a pushed track's frames too: push() queues them
        # The source's kind only: a URL may carry credentials (rtsp://user:password@...).
        source_kind = (
            "push" if spec.push else "file" if spec.file else "url" if spec.url else "device"
        )
        logger.info("session %s: track %s (%s) from a %s", session_id, track_id, name, source_kind)
        return track

    def _forget(self, track: Track) -> None:
        """An ended track leaves the node's lists (a late CloseTrack is NOT_FOUND)."""
        self.tracks.pop(track.track_id, None)
        self._sources.pop(track.track_id, None)
        self._owners.pop(track.track_id, None)

    def _pump(self, track: Track, source: VideoSource | PushSource) -> None:
        """Read the source in a thread of its own (FFmpeg blocks), frames to the loop; at
        most :data:`MAX_HANDOFF` frames wait for the loop (a source faster than real time,
        or a loop that is busy, holds the thread rather than memory)."""
        loop = asyncio.get_running_loop()
        room = threading.Semaphore(MAX_HANDOFF)

        def deliver(frame: Frame) -> None:
            room.release()
            track.publish(frame)

        def run() -> None:
            reason = "end of stream"
            try:
                for frame in source.frames():
                    while not room.acquire(timeout=1.0):
                        if not track.live or loop.is_closed():
                            return
                    try:
                        loop.call_soon_threadsafe(deliver, frame)
                    except RuntimeError:  # the loop closed meanwhile: the server stopped
                        return
            except HoloError as err:
                reason = str(err)
            except Exception as err:  # FFmpeg's own errors: the track ends, the node stays
                logger.exception("track %s: the source failed", track.track_id)
                reason = f"the source failed: {err}"
            finally:
                source.close()
            if not loop.is_closed():
                loop.call_soon_threadsafe(track.end, reason)

        threading.Thread(target=run, name=f"ingest {track.track_id}", daemon=True).start()

    def track(self, track_id: str, session_id: str = "") -> Track:
        """A live track by id, or a replay's track (``session_id`` the replay's)."""
        if is_replay(session_id):
            track = self.replay(session_id).tracks.get(track_id)
        else:
            track = self.tracks.get(track_id)
            if track is not None and session_id and track.session_id != session_id:
                track = None
        if track is None:
            raise NotFoundError("video track", track_id)
        return track

    def push(
        self,
        track_id: str,
        subject: str,
        units: list[PushedUnit],
    ) -> tuple[int, int]:
        """Access units pushed by a client, in decode order. Returns the frames pushed so
        far and the session time of the last; the frames reach viewers through the track's
        ingest thread."""
        track = self.track(track_id)
        source = self._sources.get(track_id)
        if not isinstance(source, PushSource):
            raise PreconditionError(f"track {track_id} is not a pushed track; it has a source")
        if self._owners.get(track_id) != subject:
            raise PermissionDeniedError(
                f"track {track_id} is pushed by the participant that opened it; open your own"
            )
        if not track.live:
            raise PreconditionError(f"track {track_id} is closed; open a new one")
        for unit in units:  # all checked before any is taken: a refused call takes none
            if unit.capture_t_ns:  # the same window as an intent's own time
                self.sessions.event_time(unit.capture_t_ns)
        last = None
        for unit in units:
            last = source.push(
                unit.data,
                unit.pts,
                unit.keyframe,
                dts=unit.dts,
                intrinsics=unit.intrinsics,
                pose=unit.pose,
                capture_t_ns=unit.capture_t_ns or None,
            )
        return (last.index + 1, last.t_ns) if last is not None else (track.frames, track.last_t_ns)

    def close_track(self, track_id: str, reason: str = "closed") -> Track:
        track = self.track(track_id)
        source = self._sources.pop(track_id, None)
        if source is not None:
            source.close()  # a pumping thread then ends its loop
        track.end(reason)
        return track

    def session_tracks(self, session_id: str) -> list[Track]:
        return [t for t in self.tracks.values() if t.session_id == session_id]

    # recordings ------------------------------------------------------------------------

    def recording_of(self, session_id: str) -> _LiveRecording | None:
        return self._recording.get(session_id)

    async def start_recording(self, session_id: str, subject: str = "") -> _LiveRecording:
        """Record the session from now: its tracks (as received), the whole event log so
        far and from now on, its ephemeral values."""
        live = await self.sessions.get(session_id)
        if session_id in self._recording or session_id in self._starting:
            raise PreconditionError(f"session {session_id} is being recorded already")
        self._starting.add(session_id)  # held across the awaits below
        try:
            rec = await self._start_recording(live)
        finally:
            self._starting.discard(session_id)
        self.sessions.write_audit(
            live, subject, "recording_started", {"recording_id": rec.recording_id}
        )
        return rec

    async def _start_recording(self, live: Any) -> _LiveRecording:
        session_id = live.session_id
        recording_id = f"rec-{secrets.token_hex(6)}"
        directory = self.recordings_dir / recording_id
        now = self.sessions.clock.now_ns()
        await asyncio.to_thread(self.recordings_dir.mkdir, parents=True, exist_ok=True)
        recorder = await asyncio.to_thread(
            Recorder,
            directory,
            session_id=session_id,
            case_id=live.case_id,
            started_t_ns=now,
        )
        writer = _Writer(recorder, recording_id)
        rec = _LiveRecording(recording_id, session_id, writer, directory, now)
        # The whole log so far: replay folds it to the state at the start.
        for event in live.events:
            writer.put("write_event", event)
            rec.events += 1

        def tap(item: Event | dict[str, Any]) -> None:
            if isinstance(item, Event):
                writer.put("write_event", item)
                rec.events += 1
            else:
                writer.put("write_ephemeral", item)

        live.taps.append(tap)
        rec.untap.append(lambda: live.taps.remove(tap))
        for track in self.session_tracks(session_id):
            if track.live:
                self._record_track(rec, track)
        self._recording[session_id] = rec
        return rec

    def _record_track(self, rec: _LiveRecording, track: Track) -> None:
        rec.writer.put("add_track", track.track_id, track.name, track.kind, track.params)
        rec.waiting_keyframe.add(track.track_id)

        def tap(frame: Frame) -> None:
            if track.track_id in rec.waiting_keyframe:
                if not frame.keyframe:
                    return  # a recording of a track starts where a decoder can
                rec.waiting_keyframe.discard(track.track_id)
            rec.writer.put("write_frame", track.track_id, frame)

        track.taps.append(tap)
        rec.untap.append(lambda: track.taps.remove(tap))

    async def stop_recording(self, session_id: str, subject: str = "") -> _LiveRecording:
        rec = self._recording.pop(session_id, None)
        if rec is None:
            raise PreconditionError(f"session {session_id} is not being recorded")
        for untap in rec.untap:
            untap()
        await asyncio.to_thread(rec.writer.close, self.sessions.clock.now_ns())
        live = await self.sessions.get(session_id)
        detail = {"recording_id": rec.recording_id}
        writer = rec.writer
        lost = writer.failed or "; ".join(
            f"track {t}: {why}" for t, why in writer.failed_tracks.items()
        )
        if lost:
            detail["failed"] = lost
        if writer.gaps:
            detail["frames_dropped"] = str(writer.gaps)
        self.sessions.write_audit(live, subject, "recording_stopped", detail)
        if lost:
            raise RecordingError(
                f"recording {rec.recording_id} stopped early ({lost}); what was written "
                "before is kept",
                path=rec.directory,
            )
        return rec

    def open_recording(self, recording_id: str) -> Recording:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", recording_id):
            raise NotFoundError("recording", recording_id)
        directory = self.recordings_dir / recording_id
        if not directory.is_dir():
            raise NotFoundError("recording", recording_id)
        return Recording.open(directory)

    def list_recordings(self) -> list[tuple[str, Recording]]:
        out = []
        if self.recordings_dir.is_dir():
            for directory in sorted(self.recordings_dir.iterdir()):
                try:
                    out.append((directory.name, Recording.open(directory)))
                except HoloError as err:
                    logger.warning("recording %s cannot be read: %s", directory.name, err)
        return out

    # replays ---------------------------------------------------------------------------

    async def open_replay(
        self, recording_id: str, speed: float = 1.0, *, case_id: str, opener: str = ""
    ) -> ReplaySession:
        """A new replay of a recording of ``case_id``, controlled by ``opener`` (a token
        subject). A subject holds at most :data:`REPLAYS_PER_SUBJECT`: opening another
        closes its oldest; replays nobody watches make room for new ones."""
        recording = await asyncio.to_thread(self.open_recording, recording_id)
        if recording.case_id != case_id:
            raise PermissionDeniedError(
                f"recording {recording_id!r} belongs to another case; the token is for {case_id!r}"
            )
        # Only a valid request makes room: the opener's oldest replay beyond its share.
        mine = [r for r in self.replays.values() if r.opener == opener]
        for old in mine[: max(0, len(mine) - REPLAYS_PER_SUBJECT + 1)]:
            await self.close_replay(old.session_id)
        if len(self.replays) + self._replays_opening >= MAX_REPLAYS:
            await self._close_idle_replays()
        if len(self.replays) + self._replays_opening >= MAX_REPLAYS:
            raise LimitError(
                f"this node serves {MAX_REPLAYS} replays already; try again when one ends"
            )
        self._replays_opening += 1  # held across the awaits below
        try:
            # It reads the recorded events and values: off the loop.
            replay = await asyncio.to_thread(
                ReplaySession, recording_id, recording, speed=speed, opener=opener
            )
            await replay.start()
        finally:
            self._replays_opening -= 1
        self.replays[replay.session_id] = replay
        return replay

    async def close_replay(self, session_id: str) -> None:
        replay = self.replays.pop(session_id, None)
        if replay is not None:
            await replay.stop()

    def replay(self, session_id: str) -> ReplaySession:
        replay = self.replays.get(session_id)
        if replay is None:
            raise NotFoundError("replay session", session_id)
        replay.last_used = time.monotonic()
        return replay

    async def _close_idle_replays(self) -> None:
        """Replays nobody watched for :data:`REPLAY_IDLE_S` go."""
        now = time.monotonic()
        for session_id, replay in list(self.replays.items()):
            if replay.viewers == 0 and now - replay.last_used > REPLAY_IDLE_S:
                await self.close_replay(session_id)

    async def close(self) -> None:
        for session_id in list(self.replays):
            await self.close_replay(session_id)
        for session_id in list(self._recording):
            try:
                await self.stop_recording(session_id)
            except Exception:
                logger.exception("session %s: finishing its recording failed", session_id)
        for track_id in list(self._sources):
            self.close_track(track_id, "the server is stopping")
