"""holo.v1 recording and replay messages (server side: they read recordings, which needs
the ``video`` extra)."""

from __future__ import annotations

from holo.recording.files import Recording
from holo.recording.hub import LiveRecording
from holo.recording.replay import ReplaySession
from holo.v1 import common_pb2, video_pb2
from holo.wire.video import KIND_VALUES, codec_message, track_info_message

__all__ = ["recording_message", "replay_message", "started_message"]


def recording_message(recording_id: str, r: Recording) -> video_pb2.RecordingInfo:
    return video_pb2.RecordingInfo(
        recording_id=video_pb2.RecordingId(value=recording_id),
        session_id=common_pb2.SessionId(value=r.session_id),
        case_id=r.case_id,
        started_t_ns=r.started_t_ns,
        stopped_t_ns=r.stopped_t_ns or 0,
        tracks=[
            video_pb2.TrackInfo(
                track_id=video_pb2.TrackId(value=t.track_id),
                session_id=common_pb2.SessionId(value=r.session_id),
                name=t.name,
                kind=KIND_VALUES.get(t.kind, video_pb2.TRACK_KIND_UNSPECIFIED),
                codec=codec_message(t.params),
            )
            for t in r.tracks
        ],
        events=len(r.events()),
    )


def replay_message(replay: ReplaySession) -> video_pb2.ReplayInfo:
    return video_pb2.ReplayInfo(
        session_id=common_pb2.SessionId(value=replay.session_id),
        recording_id=video_pb2.RecordingId(value=replay.recording_id),
        tracks=[track_info_message(t) for t in replay.tracks.values()],
        position_t_ns=replay.clock.now_ns(),
        speed=replay.clock.rate,
        epoch=replay.clock.epoch,
        started_t_ns=replay.recording.started_t_ns,
        stopped_t_ns=replay.recording.stopped_t_ns or 0,
    )


def started_message(rec: LiveRecording, case_id: str) -> video_pb2.RecordingInfo:
    """A recording just started: what it is of, from when, the events it holds so far."""
    return video_pb2.RecordingInfo(
        recording_id=video_pb2.RecordingId(value=rec.recording_id),
        session_id=common_pb2.SessionId(value=rec.session_id),
        case_id=case_id,
        started_t_ns=rec.started_t_ns,
        events=rec.events,
    )
