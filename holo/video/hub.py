"""The video side of a node: its sessions' tracks, fed by their sources.

A track is fed by a source this node opens (:func:`holo.video.ingest.open_source`, read in a
thread of its own) or by frames a client pushes (:class:`holo.video.push.PushSource`);
either way the frames go to the track's :class:`holo.video.relay.Track` on the event loop
(:func:`holo.video.pump.pump_frames`). Replays adopt their tracks here too, so a track id
finds its track whatever kind of session it belongs to.

Tracks live on the node that ingests them (a viewer watches a track on that node); the
session itself may span nodes (its events reach every node through the bus). Transport-
neutral: :mod:`holo.server.video_service` converts messages.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from holo.errors import (
    InvalidRequestError,
    LimitError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
)
from holo.session import SessionHub
from holo.video.frames import CodecParams, Intrinsics, PushedUnit
from holo.video.ingest import MAX_REALTIME_SKEW_NS, VideoSource, open_source
from holo.video.pump import pump_frames
from holo.video.push import PushSource
from holo.video.relay import Track, ViewerLimits, check_track

__all__ = ["SourceSpec", "VideoHub"]

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
_DEVICE = re.compile(r"/dev/video[0-9]{1,3}")
MAX_TRACKS_PER_SESSION = 8
#: A media file path or a stream URL: a camera's RTSP URL with credentials and a query is
#: a few hundred characters; a longer one is refused before the file system or FFmpeg
#: sees it (a 1 MB name was OSError ENAMETOOLONG, INTERNAL) and is never echoed whole.
MAX_SOURCE_CHARS = 1024


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


class VideoHub:
    """The live tracks of the sessions this node serves (and its replays' tracks).

    ``on_track`` callbacks are called with every track opened (the session recorder
    records the tracks of the sessions it records).
    """

    def __init__(
        self,
        sessions: SessionHub,
        *,
        media_dir: Path,
        limits: ViewerLimits | None = None,
    ) -> None:
        self.sessions = sessions
        self.media_dir = media_dir
        self.limits = limits or ViewerLimits()
        self.tracks: dict[str, Track] = {}  # live ones: an ended track is dropped
        self._sources: dict[str, VideoSource | PushSource] = {}
        self._owners: dict[str, str] = {}  # pushed track -> the subject that opened it
        self._opening: dict[str, int] = {}  # session -> tracks being opened (not yet listed)
        self.on_track: list[Callable[[Track], None]] = []

    def _source_url(self, spec: SourceSpec) -> tuple[str, bool, dict[str, str]]:
        """The path or URL to open, whether it is a file (paced, loopable), and the
        FFmpeg options that keep it to its own protocols."""
        given = [x for x in (spec.file, spec.url, spec.device) if x]
        if len(given) + (spec.push is not None) != 1:
            raise InvalidRequestError("a video source is exactly one of file, url, device or push")
        if any(len(x) > MAX_SOURCE_CHARS for x in given):
            raise InvalidRequestError(
                f"a video source of {len(given[0])} characters: give a path or URL of at most "
                f"{MAX_SOURCE_CHARS}"
            )
        if spec.file:
            root = self.media_dir.resolve()
            try:
                path = (root / spec.file).resolve()
                is_file = path.is_file()
            except (OSError, ValueError) as err:  # a name too long, a NUL byte
                raise InvalidRequestError(
                    f"video file {spec.file!r}: {getattr(err, 'strerror', None) or err}; give "
                    "a path relative to the media directory"
                ) from err
            if not path.is_relative_to(root):
                raise PermissionDeniedError(
                    f"video file {spec.file!r} is outside the media directory; give a path "
                    "relative to it (holo serve --media)"
                )
            if not is_file:
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
        """Start a track of a live session: its source opened (off the loop) and read by a
        thread of its own. ``subject`` (the caller's) alone may push into a pushed track."""
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
            if not self._opening[session_id]:
                del self._opening[session_id]  # kept, it would outlive the session

    async def _open_track(
        self, session_id: str, name: str, kind: str, spec: SourceSpec, subject: str
    ) -> Track:
        clock = self.sessions.clock.now_ns
        track_id = f"trk-{secrets.token_hex(6)}"
        source: VideoSource | PushSource
        if spec.push is not None:
            p = spec.push
            # Off the loop: a transcoded push opens a decoder and libx264 (~25 ms at
            # 4096 x 2304), and what it declares is checked there first.
            source = await asyncio.to_thread(
                functools.partial(
                    PushSource,
                    p.codec,
                    p.width,
                    p.height,
                    p.extradata,
                    p.time_base,
                    clock_ns=clock,
                    frame_rate=p.frame_rate,
                    intrinsics=spec.intrinsics,
                    max_skew_ns=MAX_REALTIME_SKEW_NS,
                )
            )
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
        track = Track(track_id, session_id, name, kind, source.params, limits=self.limits)
        self._sources[track_id] = source
        if spec.push is not None:
            self._owners[track_id] = subject
        self.adopt(track)
        # A pushed track's frames too: push() queues them for this thread.
        pump_frames(
            source.frames(),
            track.publish,
            name=f"ingest {track_id}",
            running=lambda: track.live,
            on_end=track.end,
            close=source.close,
        )
        # The source's kind only: a URL may carry credentials (rtsp://user:password@...).
        source_kind = (
            "push" if spec.push else "file" if spec.file else "url" if spec.url else "device"
        )
        logger.info("session %s: track %s (%s) from a %s", session_id, track_id, name, source_kind)
        return track

    def adopt(self, track: Track) -> None:
        """List ``track`` (a new one, or a replay's) until it ends."""
        self.tracks[track.track_id] = track
        track.on_end.append(self._forget)
        for callback in self.on_track:
            try:
                callback(track)
            except Exception:
                logger.exception("track %s: an on_track callback failed", track.track_id)

    def _forget(self, track: Track) -> None:
        """An ended track leaves the node's lists (a late CloseTrack is NOT_FOUND)."""
        self.tracks.pop(track.track_id, None)
        self._sources.pop(track.track_id, None)
        self._owners.pop(track.track_id, None)

    def track(self, track_id: str) -> Track:
        """A track this node serves, by id."""
        track = self.tracks.get(track_id)
        if track is None:
            raise NotFoundError("video track", track_id)
        return track

    def push(self, track_id: str, subject: str, units: list[PushedUnit]) -> tuple[int, int]:
        """Access units pushed by a client, in decode order. Returns the frames pushed so
        far and the session time of the last; the frames reach viewers through the track's
        ingest thread. Blocks (a codec other than H.264/HEVC is transcoded): call it in a
        thread."""
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
                self.sessions.clock.stamp(unit.capture_t_ns)
        last = None
        for unit in units:
            last = source.push(unit)
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

    async def close(self) -> None:
        for track_id in list(self._sources):
            self.close_track(track_id, "the server is stopping")
