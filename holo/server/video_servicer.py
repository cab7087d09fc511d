# ruff: noqa: N802  (servicer method names are the RPC names the generated bases require)
"""ClockService and VideoService: thin over :class:`holo.video.hub.VideoHub`.

Every track, recording and replay belongs to a case (its session's); a token for another
case is PERMISSION_DENIED, as for sessions.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator

from grpc import aio

from holo.errors import InvalidRequestError, LimitError, NotFoundError, PermissionDeniedError
from holo.server.encoded import add_servicer
from holo.server.interceptors import current_claims
from holo.session import SessionHub
from holo.v1 import clock_pb2, clock_pb2_grpc, common_pb2, video_pb2, video_pb2_grpc
from holo.video.frames import Frame
from holo.video.hub import PushedUnit, SourceSpec, VideoHub
from holo.video.recording import Recording
from holo.video.relay import Skipped, Track
from holo.video.replay import ReplaySession, is_replay
from holo.wire_video import (
    KIND_NAMES,
    KIND_VALUES,
    camera_pose_from_message,
    codec_from_message,
    codec_message,
    frame_message,
    intrinsics_from_message,
    track_info_message,
)

__all__ = ["ClockServicer", "VideoServicer", "add_video_servicer"]

logger = logging.getLogger(__name__)

#: What one PushFrames call may carry (the server's receive limit is a little above).
MAX_PUSH_BYTES = 1 << 20
#: Serialised frame messages kept for the viewers still to be sent them (with the frames
#: they hold): a few seconds of every track a node relays.
MAX_ENCODED_BYTES = 64 << 20


class ClockServicer(clock_pb2_grpc.ClockServiceServicer):
    """The session clock: the node's for live sessions, a replay's own for a replay."""

    def __init__(self, sessions: SessionHub, video: VideoHub) -> None:
        self._sessions = sessions
        self._video = video

    async def Sync(
        self, request: clock_pb2.SyncRequest, context: aio.ServicerContext
    ) -> clock_pb2.SyncReply:
        session_id = request.session_id.value
        if is_replay(session_id):
            replay = _replay(self._video, session_id)
            t2 = replay.clock.now_ns()
            rate, epoch = replay.clock.rate, replay.clock.epoch
            now = replay.clock.now_ns
        else:
            t2 = self._sessions.clock.now_ns()
            rate, epoch, now = 1.0, 0, self._sessions.clock.now_ns
        return clock_pb2.SyncReply(
            client_send_ns=request.client_send_ns,
            server_receive_ns=t2,
            server_send_ns=now(),
            rate=rate,
            epoch=epoch,
        )


def _same_case(case_id: str, what: str) -> None:
    claims = current_claims()
    if case_id != claims.case_id:
        raise PermissionDeniedError(
            f"{what} belongs to another case; the token is for {claims.case_id!r}"
        )


def _replay(video: VideoHub, session_id: str) -> ReplaySession:
    """A replay of the caller's case."""
    replay = video.replay(session_id)
    _same_case(replay.case_id, f"replay {session_id!r}")
    return replay


def _recording_message(recording_id: str, r: Recording) -> video_pb2.RecordingInfo:
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


def _replay_message(replay: ReplaySession) -> video_pb2.ReplayInfo:
    return video_pb2.ReplayInfo(
        session_id=common_pb2.SessionId(value=replay.session_id),
        recording_id=video_pb2.RecordingId(value=replay.recording_id),
        tracks=[track_info_message(t.info()) for t in replay.tracks.values()],
        position_t_ns=replay.clock.now_ns(),
        speed=replay.clock.rate,
        epoch=replay.clock.epoch,
        started_t_ns=replay.recording.started_t_ns,
        stopped_t_ns=replay.recording.stopped_t_ns or 0,
    )


def add_video_servicer(servicer: VideoServicer, server: aio.Server) -> None:
    """Register VideoService; a frame message every viewer of a track is sent is built and
    serialised once (:mod:`holo.server.encoded`)."""
    add_servicer(servicer, server, video_pb2.DESCRIPTOR, "VideoService")


class VideoServicer(video_pb2_grpc.VideoServiceServicer):
    def __init__(self, sessions: SessionHub, video: VideoHub) -> None:
        self._sessions = sessions
        self._video = video
        # The frame message each viewer is sent, serialised once (by id(), holding the
        # frame so the id cannot be reused while cached).
        self._encoded: OrderedDict[int, tuple[Frame, bytes]] = OrderedDict()
        self._encoded_bytes = 0

    def _frame_bytes(self, frame: Frame) -> bytes:
        cached = self._encoded.get(id(frame))
        if cached is not None and cached[0] is frame:
            return cached[1]
        data = video_pb2.VideoMessage(frame=frame_message(frame)).SerializeToString()
        self._encoded[id(frame)] = (frame, data)
        self._encoded_bytes += len(data) + len(frame.data)
        while self._encoded_bytes > MAX_ENCODED_BYTES and len(self._encoded) > 1:
            _, (old, old_data) = self._encoded.popitem(last=False)
            self._encoded_bytes -= len(old_data) + len(old.data)
        return data

    async def _live_session(self, session_id: str) -> str:
        live = await self._sessions.get(session_id)
        _same_case(live.case_id, f"session {session_id!r}")
        return live.session_id

    def _track(self, track_id: str, session_id: str = "") -> Track:
        track = self._video.track(track_id, session_id)
        if is_replay(track.session_id):
            _replay(self._video, track.session_id)
        else:
            live = self._sessions.live(track.session_id)
            if live is None:  # its session is no longer served here
                raise NotFoundError("video track", track_id)
            _same_case(live.case_id, f"track {track_id!r}")
        return track

    async def OpenTrack(
        self, request: video_pb2.OpenTrackRequest, context: aio.ServicerContext
    ) -> video_pb2.TrackInfo:
        session_id = await self._live_session(request.session_id.value)
        kind = KIND_NAMES.get(request.kind)
        if kind is None:
            raise InvalidRequestError(
                "a track needs a kind: endoscope, room camera, headset camera or other"
            )
        src = request.source
        which = src.WhichOneof("source")
        if which is None:
            raise InvalidRequestError(
                "a track needs a source: file, url, device, or push with its codec"
            )
        spec = SourceSpec(
            file=src.file,
            url=src.url,
            device=src.device,
            push=codec_from_message(src.push.codec) if which == "push" else None,
            loop=src.loop,
            intrinsics=intrinsics_from_message(src.intrinsics)
            if src.HasField("intrinsics")
            else None,
        )
        track = await self._video.open_track(
            session_id, request.name, kind, spec, current_claims().subject
        )
        return track_info_message(track.info())

    async def PushFrames(
        self, request: video_pb2.PushFramesRequest, context: aio.ServicerContext
    ) -> video_pb2.PushFramesReply:
        track = self._track(request.track_id.value)
        if sum(len(f.data) for f in request.frames) > MAX_PUSH_BYTES:
            raise LimitError(f"a PushFrames call carries at most {MAX_PUSH_BYTES} bytes")
        frames = [
            PushedUnit(
                f.data,
                f.pts,
                f.dts if f.has_dts else None,
                f.keyframe,
                f.capture_t_ns,
                intrinsics_from_message(f.intrinsics) if f.HasField("intrinsics") else None,
                camera_pose_from_message(f.camera_pose) if f.HasField("camera_pose") else None,
            )
            for f in request.frames
        ]
        # Off the loop: a pushed codec other than H.264/HEVC is transcoded here.
        count, last_t_ns = await asyncio.to_thread(
            self._video.push, track.track_id, current_claims().subject, frames
        )
        return video_pb2.PushFramesReply(frames=count, last_t_ns=last_t_ns)

    async def CloseTrack(
        self, request: video_pb2.CloseTrackRequest, context: aio.ServicerContext
    ) -> video_pb2.TrackInfo:
        track = self._track(request.track_id.value)
        if is_replay(track.session_id):
            raise PermissionDeniedError("a replay's tracks close with the replay")
        return track_info_message(self._video.close_track(track.track_id).info())

    async def ListTracks(
        self, request: video_pb2.ListTracksRequest, context: aio.ServicerContext
    ) -> video_pb2.ListTracksReply:
        session_id = request.session_id.value
        if is_replay(session_id):
            tracks = list(_replay(self._video, session_id).tracks.values())
        else:
            tracks = self._video.session_tracks(await self._live_session(session_id))
        return video_pb2.ListTracksReply(tracks=[track_info_message(t.info()) for t in tracks])

    async def WatchVideo(
        self, request: video_pb2.WatchVideoRequest, context: aio.ServicerContext
    ) -> AsyncIterator[video_pb2.VideoMessage | bytes]:
        track = self._track(request.track_id.value, request.session_id.value)
        viewer = track.watch()
        try:
            yield video_pb2.VideoMessage(
                header=video_pb2.TrackHeader(track=track_info_message(track.info()))
            )
            while True:
                item = await viewer.next()
                if item is None:
                    yield video_pb2.VideoMessage(ended=track_info_message(track.info()))
                    return
                if isinstance(item, Skipped):
                    yield video_pb2.VideoMessage(
                        skipped=video_pb2.FramesSkipped(
                            first_index=item.first_index,
                            next_index=item.next_index,
                            reason=item.reason,
                        )
                    )
                else:
                    yield self._frame_bytes(item)
        finally:
            track.unwatch(viewer)

    # recording and replay ---------------------------------------------------------------

    async def StartRecording(
        self, request: video_pb2.StartRecordingRequest, context: aio.ServicerContext
    ) -> video_pb2.RecordingInfo:
        session_id = await self._live_session(request.session_id.value)
        rec = await self._video.start_recording(session_id, current_claims().subject)
        return video_pb2.RecordingInfo(
            recording_id=video_pb2.RecordingId(value=rec.recording_id),
            session_id=common_pb2.SessionId(value=session_id),
            case_id=current_claims().case_id,
            started_t_ns=rec.started_t_ns,
            events=rec.events,
        )

    async def StopRecording(
        self, request: video_pb2.StopRecordingRequest, context: aio.ServicerContext
    ) -> video_pb2.RecordingInfo:
        session_id = await self._live_session(request.session_id.value)
        rec = await self._video.stop_recording(session_id, current_claims().subject)

        def describe() -> video_pb2.RecordingInfo:  # reads the recording: off the loop
            return _recording_message(
                rec.recording_id, self._video.open_recording(rec.recording_id)
            )

        return await asyncio.to_thread(describe)

    async def ListRecordings(
        self, request: video_pb2.ListRecordingsRequest, context: aio.ServicerContext
    ) -> video_pb2.ListRecordingsReply:
        case_id = current_claims().case_id

        def describe() -> list[video_pb2.RecordingInfo]:  # reads every event log: off the loop
            found = self._video.list_recordings()
            return [_recording_message(rid, r) for rid, r in found if r.case_id == case_id]

        return video_pb2.ListRecordingsReply(recordings=await asyncio.to_thread(describe))

    async def OpenReplay(
        self, request: video_pb2.OpenReplayRequest, context: aio.ServicerContext
    ) -> video_pb2.ReplayInfo:
        claims = current_claims()
        replay = await self._video.open_replay(
            request.recording_id.value,
            request.speed or 1.0,
            case_id=claims.case_id,
            opener=claims.subject,
        )
        return _replay_message(replay)

    async def ControlReplay(
        self, request: video_pb2.ControlReplayRequest, context: aio.ServicerContext
    ) -> video_pb2.ReplayInfo:
        replay = _replay(self._video, request.session_id.value)
        if replay.opener and replay.opener != current_claims().subject:
            raise PermissionDeniedError(
                f"replay {replay.session_id!r} is controlled by whoever opened it; open your "
                "own replay of the recording to seek it"
            )
        if request.pause and request.resume:
            raise InvalidRequestError("pause or resume, not both")
        if request.speed:
            replay.set_speed(request.speed)
        if request.pause or request.resume:
            replay.pause(request.pause)
        if request.seek_t_ns:
            replay.seek(request.seek_t_ns)
        return _replay_message(replay)
