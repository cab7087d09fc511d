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
)
from holo.session import SessionHub
from holo.session.state import Event
from holo.video.frames import CameraPose, CodecParams, Frame, Intrinsics
from holo.video.ingest import PushSource, VideoSource, open_source
from holo.video.recording import Recorder, Recording
from holo.video.relay import Track, ViewerLimits
from holo.video.replay import ReplaySession

__all__ = ["SourceSpec", "VideoHub"]

logger = logging.getLogger(__name__)

#: URL schemes a presenter may ask the server to open (FFmpeg protocols for live video).
URL_SCHEMES = ("rtsp", "rtsps", "rtp", "srt", "udp", "tcp", "http", "https")
_DEVICE = re.compile(r"/dev/video[0-9]{1,3}")
MAX_TRACKS_PER_SESSION = 8
MAX_REPLAYS = 16  # per node; each holds a pacing thread per track
REPLAY_IDLE_S = 600.0


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


@dataclass
class _LiveRecording:
    recording_id: str
    session_id: str
    recorder: Recorder
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
        self.tracks: dict[str, Track] = {}
        self._sources: dict[str, VideoSource | PushSource] = {}
        self._recording: dict[str, _LiveRecording] = {}  # session_id -> recording
        self.replays: dict[str, ReplaySession] = {}

    # tracks ----------------------------------------------------------------------------

    def _source_url(self, spec: SourceSpec) -> tuple[str, bool]:
        """The path or URL to open, and whether it is a file (paced, loopable)."""
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
            return str(path), True
        if spec.url:
            scheme = spec.url.split(":", 1)[0].lower()
            if scheme not in URL_SCHEMES:
                raise InvalidRequestError(
                    f"video URL {spec.url!r}: the scheme must be one of {', '.join(URL_SCHEMES)}"
                )
            return spec.url, False
        if not _DEVICE.fullmatch(spec.device):
            raise InvalidRequestError(
                f"capture device {spec.device!r}: give a V4L2 device such as /dev/video0"
            )
        return f"v4l2:{spec.device}", False

    async def open_track(self, session_id: str, name: str, kind: str, spec: SourceSpec) -> Track:
        live = await self.sessions.get(session_id)
        if sum(t.session_id == session_id and t.live for t in self.tracks.values()) >= (
            MAX_TRACKS_PER_SESSION
        ):
            raise LimitError(
                f"session {session_id} has {MAX_TRACKS_PER_SESSION} live tracks; close one first"
            )
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
            url, is_file = self._source_url(spec)
            source = await asyncio.to_thread(
                open_source,
                url,
                clock_ns=clock,
                loop=spec.loop and is_file,
                intrinsics=spec.intrinsics,
            )
            params = source.params
        track = Track(track_id, live.session_id, name, kind, params, limits=self.limits)
        self.tracks[track_id] = track
        self._sources[track_id] = source
        recording = self._recording.get(session_id)
        if recording is not None:
            self._record_track(recording, track)
        self._pump(track, source)  # a pushed track's frames too: push() queues them
        logger.info("session %s: track %s (%s) from %s", session_id, track_id, name, spec)
        return track

    def _pump(self, track: Track, source: VideoSource | PushSource) -> None:
        """Read the source in a thread of its own (FFmpeg blocks), frames to the loop."""
        loop = asyncio.get_running_loop()

        def run() -> None:
            reason = "end of stream"
            try:
                for frame in source.frames():
                    loop.call_soon_threadsafe(track.publish, frame)
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
        if session_id.startswith("rpl-"):
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
        frames: list[tuple[bytes, int, bool, int, Intrinsics | None, CameraPose | None]],
    ) -> tuple[int, int]:
        """Access units pushed by a client: (data, pts, keyframe, capture_t_ns, intrinsics,
        pose) each, in decode order. Returns the frames pushed so far and the session time
        of the last; the frames reach viewers through the track's ingest thread."""
        track = self.track(track_id)
        source = self._sources.get(track_id)
        if not isinstance(source, PushSource):
            raise PreconditionError(f"track {track_id} is not a pushed track; it has a source")
        if not track.live:
            raise PreconditionError(f"track {track_id} is closed; open a new one")
        last = None
        for data, pts, keyframe, capture_t_ns, intrinsics, pose in frames:
            last = source.push(
                data,
                pts,
                keyframe,
                intrinsics=intrinsics,
                pose=pose,
                capture_t_ns=capture_t_ns or None,
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
        live = await self.sessions.get(session_id)
        if session_id in self._recording:
            raise PreconditionError(f"session {session_id} is being recorded already")
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
        rec = _LiveRecording(recording_id, session_id, recorder, directory, now)
        # The whole log so far: replay folds it to the state at the start.
        for event in live.events:
            recorder.write_event(event)
            rec.events += 1

        def tap(item: Event | dict[str, Any]) -> None:
            if isinstance(item, Event):
                recorder.write_event(item)
                rec.events += 1
            else:
                recorder.write_ephemeral(item)

        live.taps.append(tap)
        rec.untap.append(lambda: live.taps.remove(tap))
        for track in self.session_tracks(session_id):
            if track.live:
                self._record_track(rec, track)
        self._recording[session_id] = rec
        self.sessions.write_audit(
            live, subject, "recording_started", {"recording_id": recording_id}
        )
        return rec

    def _record_track(self, rec: _LiveRecording, track: Track) -> None:
        rec.recorder.add_track(track.track_id, track.name, track.kind, track.params)
        rec.waiting_keyframe.add(track.track_id)

        def tap(frame: Frame) -> None:
            if track.track_id in rec.waiting_keyframe:
                if not frame.keyframe:
                    return  # a recording of a track starts where a decoder can
                rec.waiting_keyframe.discard(track.track_id)
            rec.recorder.write_frame(track.track_id, frame)

        track.taps.append(tap)
        rec.untap.append(lambda: track.taps.remove(tap))

    async def stop_recording(self, session_id: str, subject: str = "") -> _LiveRecording:
        rec = self._recording.pop(session_id, None)
        if rec is None:
            raise PreconditionError(f"session {session_id} is not being recorded")
        for untap in rec.untap:
            untap()
        await asyncio.to_thread(rec.recorder.close, self.sessions.clock.now_ns())
        live = await self.sessions.get(session_id)
        self.sessions.write_audit(
            live, subject, "recording_stopped", {"recording_id": rec.recording_id}
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

    async def open_replay(self, recording_id: str, speed: float = 1.0) -> ReplaySession:
        if len(self.replays) >= MAX_REPLAYS:
            await self._close_idle_replays()
        if len(self.replays) >= MAX_REPLAYS:
            raise LimitError(
                f"this node serves {MAX_REPLAYS} replays already; close one or try later"
            )
        recording = await asyncio.to_thread(self.open_recording, recording_id)
        replay = ReplaySession(recording_id, recording, speed=speed)
        await replay.start()
        self.replays[replay.session_id] = replay
        return replay

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
                del self.replays[session_id]
                await replay.stop()

    async def close(self) -> None:
        for replay in self.replays.values():
            await replay.stop()
        self.replays.clear()
        for session_id in list(self._recording):
            try:
                await self.stop_recording(session_id)
            except Exception:
                logger.exception("session %s: finishing its recording failed", session_id)
        for track_id in list(self._sources):
            self.close_track(track_id, "the server is stopping")
