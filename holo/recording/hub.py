"""Recordings and replays of the sessions a node serves.

A recording taps a live session (every durable event and ephemeral value this node sees)
and every track of it, and writes them with a :class:`~holo.recording.writer.RecordingWriter`
(off the loop). A replay serves a recording as a read-only session
(:class:`~holo.recording.replay.ReplaySession`); its tracks are adopted by the node's
:class:`~holo.video.hub.VideoHub`, so they are watched like any other.

Stopping. An intent may carry a ``t_ns`` up to :data:`~holo.session.clock.MAX_BACKDATE_NS`
(1 s) in the past, so an event of the recording's last second can still be appended after
the stop. :meth:`RecordingHub.stop_recording` therefore keeps listening for that long:
events stamped at or before the stop are written (with everything before them in the log,
so the replay's fold stays gap-free), values and frames stamped after it are not. The
replay's last frames then show what live viewers saw.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from holo.audit import NO_AUDIT, Auditor
from holo.errors import (
    HoloError,
    LimitError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    RecordingError,
)
from holo.recording.files import Recorder, Recording
from holo.recording.replay import ReplaySession, check_speed
from holo.recording.writer import RecordingWriter
from holo.session import LiveSession, SessionHub
from holo.session.clock import MAX_BACKDATE_NS
from holo.session.records import EphemeralUpdate
from holo.session.state import Event
from holo.video.frames import Frame
from holo.video.hub import VideoHub
from holo.video.relay import Track

__all__ = ["LiveRecording", "RecordingHub"]

logger = logging.getLogger(__name__)

MAX_REPLAYS = 16  # per node; each holds a pacing thread per track
REPLAY_IDLE_S = 60.0  # unwatched this long, a replay gives way to a new one
REPLAYS_PER_SUBJECT = 2
_RECORDING_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass
class LiveRecording:
    """A recording in progress. ``stopped_t_ns`` is set once a stop was asked for: from then
    on only what is stamped at or before it is written, events held until the end."""

    recording_id: str
    session_id: str
    writer: RecordingWriter
    directory: Path
    started_t_ns: int
    untap: list[Callable[[], None]] = field(default_factory=list)
    waiting_keyframe: set[str] = field(default_factory=set)
    events: int = 0
    stopped_t_ns: int | None = None
    held: list[Event] = field(default_factory=list)  # events that came after the stop
    ended_tracks: set[str] = field(default_factory=set)  # a frame after the stop came

    def on_event(self, event: Event) -> None:
        if self.stopped_t_ns is None:
            self.writer.put("write_event", event)
            self.events += 1
        else:
            self.held.append(event)

    def on_value(self, update: EphemeralUpdate) -> None:
        if self.stopped_t_ns is None or update.t_ns <= self.stopped_t_ns:
            self.writer.put("write_ephemeral", update)

    def on_frame(self, track_id: str, frame: Frame) -> None:
        if track_id in self.ended_tracks:
            return
        if self.stopped_t_ns is not None and frame.t_ns > self.stopped_t_ns:
            self.ended_tracks.add(track_id)  # decode order: nothing after it is written
            return
        if track_id in self.waiting_keyframe:
            if not frame.keyframe:
                return  # a recording of a track starts where a decoder can
            self.waiting_keyframe.discard(track_id)
        self.writer.put("write_frame", track_id, frame)

    def write_held(self) -> None:
        """The held events up to the last one stamped at or before the stop."""
        assert self.stopped_t_ns is not None
        last = max((k for k, e in enumerate(self.held) if e.t_ns <= self.stopped_t_ns), default=-1)
        for event in self.held[: last + 1]:
            self.writer.put("write_event", event)
            self.events += 1


class RecordingHub:
    """Recordings and replays of this node's sessions.

    Parameters
    ----------
    sessions, video
        The node's live sessions and tracks.
    recordings_dir
        Where recordings are written (a folder each) and read from.
    audit
        Receives recordings started and stopped.
    """

    def __init__(
        self,
        sessions: SessionHub,
        video: VideoHub,
        *,
        recordings_dir: Path,
        audit: Auditor = NO_AUDIT,
    ) -> None:
        self.sessions = sessions
        self.video = video
        self.recordings_dir = recordings_dir
        self._audit = audit
        self._recording: dict[str, LiveRecording] = {}  # session_id -> recording
        self._busy: set[str] = set()  # sessions whose recording starts or stops
        self.replays: dict[str, ReplaySession] = {}
        self._replays_opening = 0
        video.on_track.append(self._track_opened)

    async def _audit_write(
        self, live: LiveSession, subject: str, action: str, rec: LiveRecording, **about: str | int
    ) -> None:
        ids = {"session_id": live.session_id, "recording_id": rec.recording_id}
        await self._audit.record(action, subject, live.case_id, **ids, **about)

    # recordings ------------------------------------------------------------------------

    def recording_of(self, session_id: str) -> LiveRecording | None:
        return self._recording.get(session_id)

    async def start_recording(self, session_id: str, subject: str = "") -> LiveRecording:
        """Record the session from now: its tracks (as received), the whole event log so
        far and from now on, its ephemeral values."""
        live = await self.sessions.get(session_id)
        if session_id in self._recording or session_id in self._busy:
            raise PreconditionError(f"session {session_id} is being recorded already")
        self._busy.add(session_id)  # held across the awaits below
        try:
            rec = await self._start_recording(live)
        finally:
            self._busy.discard(session_id)
        await self._audit_write(live, subject, "recording_started", rec)
        return rec

    async def _start_recording(self, live: LiveSession) -> LiveRecording:
        session_id = live.session_id
        recording_id = f"rec-{secrets.token_hex(6)}"
        directory = self.recordings_dir / recording_id
        now = self.sessions.clock.now_ns()
        await asyncio.to_thread(self.recordings_dir.mkdir, parents=True, exist_ok=True)
        recorder = await asyncio.to_thread(
            Recorder, directory, session_id=session_id, case_id=live.case_id, started_t_ns=now
        )
        rec = LiveRecording(
            recording_id,
            session_id,
            RecordingWriter(recorder, recording_id, directory.parent.parent),
            directory,
            now,
        )
        # The whole log so far: replay folds it to the state at the start.
        for event in live.events:
            rec.on_event(event)

        def tap(item: Event | EphemeralUpdate) -> None:
            if isinstance(item, Event):
                rec.on_event(item)
            else:
                rec.on_value(item)

        live.taps.append(tap)
        rec.untap.append(lambda: live.taps.remove(tap))
        for track in self.video.session_tracks(session_id):
            if track.live:
                self._record_track(rec, track)
        self._recording[session_id] = rec
        return rec

    def _track_opened(self, track: Track) -> None:
        rec = self._recording.get(track.session_id)
        if rec is not None and rec.stopped_t_ns is None:
            self._record_track(rec, track)

    def _record_track(self, rec: LiveRecording, track: Track) -> None:
        rec.writer.put("add_track", track.track_id, track.name, track.kind, track.params)
        rec.waiting_keyframe.add(track.track_id)

        def tap(frame: Frame) -> None:
            rec.on_frame(track.track_id, frame)

        track.taps.append(tap)
        rec.untap.append(lambda: track.taps.remove(tap))

    async def stop_recording(self, session_id: str, subject: str = "") -> LiveRecording:
        """Stop at the session clock's now; returns once the files are finished (about
        :data:`~holo.session.clock.MAX_BACKDATE_NS` later: see the module's notes)."""
        rec = self._recording.get(session_id)
        if rec is None or session_id in self._busy:
            raise PreconditionError(f"session {session_id} is not being recorded")
        self._busy.add(session_id)
        try:
            rec.stopped_t_ns = self.sessions.clock.now_ns()
            await asyncio.sleep(MAX_BACKDATE_NS / 1e9)  # events stamped before it may come
            for untap in rec.untap:
                untap()
            rec.write_held()
            await asyncio.to_thread(rec.writer.close, rec.stopped_t_ns)
        finally:
            self._recording.pop(session_id, None)
            self._busy.discard(session_id)
        live = await self.sessions.get(session_id)
        writer = rec.writer
        lost = writer.failed or "; ".join(
            f"track {t}: {why}" for t, why in writer.failed_tracks.items()
        )
        await self._audit_write(
            live, subject, "recording_stopped", rec, failed=lost, frames_dropped=writer.gaps
        )
        if lost:
            raise RecordingError(
                f"recording {rec.recording_id} stopped early ({lost}); what was written "
                "before is kept",
                path=rec.directory,
            )
        return rec

    def open_recording(self, recording_id: str) -> Recording:
        """A finished (or interrupted) recording of this node; blocks: call it in a thread."""
        if not _RECORDING_ID.fullmatch(recording_id):
            raise NotFoundError("recording", recording_id)
        directory = self.recordings_dir / recording_id
        if not directory.is_dir():
            raise NotFoundError("recording", recording_id)
        return Recording.open(directory)

    def list_recordings(self) -> list[tuple[str, Recording]]:
        """Every readable recording (blocks: call it in a thread)."""
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
        self,
        recording_id: str,
        speed: float = 1.0,
        *,
        case_id: str,
        opener: str = "",
        start: str = "now",
    ) -> ReplaySession:
        """A new replay of a recording of ``case_id``, controlled by ``opener`` (a token
        subject), starting as ``start`` says (:data:`holo.recording.START_MODES`).
        A subject holds at most :data:`REPLAYS_PER_SUBJECT`: opening another closes its
        oldest; replays nobody watches make room for new ones."""
        check_speed(speed)  # before anything: a refused request closes no replay
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
                ReplaySession, recording_id, recording, speed=speed, opener=opener, start=start
            )
            await replay.start()
        finally:
            self._replays_opening -= 1
        self.replays[replay.session_id] = replay
        for track in replay.tracks.values():
            self.video.adopt(track)
        return replay

    async def close_replay(self, session_id: str) -> None:
        replay = self.replays.pop(session_id, None)
        if replay is not None:
            await replay.stop()

    def replay(self, session_id: str) -> ReplaySession | None:
        """The replay ``session_id`` if this node serves it."""
        replay = self.replays.get(session_id)
        if replay is not None:
            replay.last_used = time.monotonic()
        return replay

    async def _close_idle_replays(self) -> None:
        """Replays nobody watched for :data:`REPLAY_IDLE_S` go."""
        now = time.monotonic()
        for session_id, replay in list(self.replays.items()):
            if replay.viewers == 0 and now - replay.last_used > REPLAY_IDLE_S:
                await self.close_replay(session_id)

    async def close(self) -> None:
        """Close the replays; finish every recording (together: each waits out its second)."""
        for session_id in list(self.replays):
            await self.close_replay(session_id)

        async def finish(session_id: str) -> None:
            try:
                await self.stop_recording(session_id)
            except Exception:
                logger.exception("session %s: finishing its recording failed", session_id)

        await asyncio.gather(*(finish(s) for s in list(self._recording)))
