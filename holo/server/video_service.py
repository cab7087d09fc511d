# ruff: noqa: N802  (servicer method names are the RPC names the generated bases require)
"""VideoService: tracks (thin over :class:`holo.video.hub.VideoHub`), recordings and
replays (thin over :class:`holo.recording.hub.RecordingHub`).

Every track, recording and replay belongs to a case (its session's); a token for another
case is PERMISSION_DENIED, as for sessions (:mod:`holo.server.access`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from grpc import aio

from holo.errors import InvalidRequestError, LimitError, NotFoundError, PermissionDeniedError
from holo.recording.hub import RecordingHub
from holo.server.access import SessionAccess
from holo.server.encoded import EncodeOnce, add_servicer
from holo.server.interceptors import current_claims
from holo.session.served import ServedSession
from holo.v1 import video_pb2, video_pb2_grpc
from holo.video.frames import Frame
from holo.video.hub import SourceSpec, VideoHub
from holo.video.relay import Skipped, Track
from holo.wire.recording import recording_message, replay_message, started_message
from holo.wire.video import (
    KIND_NAMES,
    codec_from_message,
    intrinsics_from_message,
    pushed_from_message,
    track_info_message,
    watch_message,
)

__all__ = ["VideoServicer", "add_video_servicer"]

#: What one PushFrames call may carry (the server's receive limit is a little above).
MAX_PUSH_BYTES = 1 << 20
#: Serialised frame messages kept for the viewers still to be sent them (with the frames
#: they hold): a few seconds of every track a node relays. A frame can be asked for only
#: while a viewer's queue or its track's group of pictures holds it: at most
#: ``ViewerLimits.max_frames`` (90) frames, 3 s at 30 fps; 10 s covers tracks down to
#: 9 fps, and a slower one's late viewer encodes a frame again (the same bytes).
#: 64 MiB holds those 10 s up to about 27 Mbit/s of video in all (each frame counted twice:
#: its data and the message holding it); above that, the byte bound keeps fewer seconds.
MAX_ENCODED_AGE_S = 10.0
MAX_ENCODED_BYTES = 64 << 20


def add_video_servicer(servicer: VideoServicer, server: aio.Server) -> None:
    """Register VideoService with the encode-once serializer (:mod:`holo.server.encoded`)."""
    add_servicer(servicer, server, video_pb2.DESCRIPTOR, "VideoService")


class VideoServicer(video_pb2_grpc.VideoServiceServicer):
    def __init__(self, access: SessionAccess, video: VideoHub, recordings: RecordingHub) -> None:
        self._access = access
        self._video = video
        self._recordings = recordings
        # The frame message each viewer is sent, serialised once.
        self._frames: EncodeOnce[Frame, bytes] = EncodeOnce(
            lambda f: watch_message(f).SerializeToString(),
            max_items=1 << 20,
            max_bytes=MAX_ENCODED_BYTES,
            max_age_s=MAX_ENCODED_AGE_S,
            size=lambda frame, data: len(data) + len(frame.data),
        )

    async def _track(self, track_id: str, session_id: str = "") -> tuple[Track, ServedSession]:
        """A track this node serves, and its session (of the caller's case)."""
        track = self._video.track(track_id)
        if session_id and track.session_id != session_id:
            raise NotFoundError("video track", track_id)
        return track, await self._access.session(track.session_id)

    async def OpenTrack(
        self, request: video_pb2.OpenTrackRequest, context: aio.ServicerContext
    ) -> video_pb2.TrackInfo:
        session = await self._access.live(request.session_id.value)
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
            session.info.session_id, request.name, kind, spec, current_claims().subject
        )
        return track_info_message(track)

    async def PushFrames(
        self, request: video_pb2.PushFramesRequest, context: aio.ServicerContext
    ) -> video_pb2.PushFramesReply:
        track, _ = await self._track(request.track_id.value)
        if sum(len(f.data) for f in request.frames) > MAX_PUSH_BYTES:
            raise LimitError(f"a PushFrames call carries at most {MAX_PUSH_BYTES} bytes")
        units = [pushed_from_message(f) for f in request.frames]
        # Off the loop: a pushed codec other than H.264/HEVC is transcoded here.
        count, last_t_ns = await asyncio.to_thread(
            self._video.push, track.track_id, current_claims().subject, units
        )
        return video_pb2.PushFramesReply(frames=count, last_t_ns=last_t_ns)

    async def CloseTrack(
        self, request: video_pb2.CloseTrackRequest, context: aio.ServicerContext
    ) -> video_pb2.TrackInfo:
        track, session = await self._track(request.track_id.value)
        if session.read_only:
            raise PermissionDeniedError("a replay's tracks close with the replay")
        return track_info_message(self._video.close_track(track.track_id))

    async def ListTracks(
        self, request: video_pb2.ListTracksRequest, context: aio.ServicerContext
    ) -> video_pb2.ListTracksReply:
        session = await self._access.session(request.session_id.value)
        tracks = self._video.session_tracks(session.info.session_id)
        return video_pb2.ListTracksReply(tracks=[track_info_message(t) for t in tracks])

    async def WatchVideo(
        self, request: video_pb2.WatchVideoRequest, context: aio.ServicerContext
    ) -> AsyncIterator[video_pb2.VideoMessage | bytes]:
        track, _ = await self._track(request.track_id.value, request.session_id.value)
        viewer = track.watch()
        try:
            yield watch_message(track)
            while True:
                item = await viewer.next()
                if item is None:
                    yield watch_message(track, ended=True)
                    return
                yield watch_message(item) if isinstance(item, Skipped) else self._frames(item)
        finally:
            track.unwatch(viewer)

    # recording and replay ---------------------------------------------------------------

    async def StartRecording(
        self, request: video_pb2.StartRecordingRequest, context: aio.ServicerContext
    ) -> video_pb2.RecordingInfo:
        session = await self._access.live(request.session_id.value)
        info = session.info
        rec = await self._recordings.start_recording(info.session_id, current_claims().subject)
        return started_message(rec, info.case_id)

    async def StopRecording(
        self, request: video_pb2.StopRecordingRequest, context: aio.ServicerContext
    ) -> video_pb2.RecordingInfo:
        session = await self._access.live(request.session_id.value)
        recordings = self._recordings
        rec = await recordings.stop_recording(session.info.session_id, current_claims().subject)

        def describe() -> video_pb2.RecordingInfo:  # reads the recording: off the loop
            return recording_message(rec.recording_id, recordings.open_recording(rec.recording_id))

        return await asyncio.to_thread(describe)

    async def ListRecordings(
        self, request: video_pb2.ListRecordingsRequest, context: aio.ServicerContext
    ) -> video_pb2.ListRecordingsReply:
        case_id = current_claims().case_id

        def describe() -> list[video_pb2.RecordingInfo]:  # reads every event log: off the loop
            found = self._recordings.list_recordings()
            return [recording_message(rid, r) for rid, r in found if r.case_id == case_id]

        return video_pb2.ListRecordingsReply(recordings=await asyncio.to_thread(describe))

    async def OpenReplay(
        self, request: video_pb2.OpenReplayRequest, context: aio.ServicerContext
    ) -> video_pb2.ReplayInfo:
        claims = current_claims()
        replay = await self._recordings.open_replay(
            request.recording_id.value,
            request.speed or 1.0,
            case_id=claims.case_id,
            opener=claims.subject,
        )
        return replay_message(replay)

    async def ControlReplay(
        self, request: video_pb2.ControlReplayRequest, context: aio.ServicerContext
    ) -> video_pb2.ReplayInfo:
        session_id = request.session_id.value
        await self._access.session(session_id)  # the caller's case
        replay = self._recordings.replay(session_id)
        if replay is None:
            raise NotFoundError("replay session", session_id)
        if replay.opener and replay.opener != current_claims().subject:
            raise PermissionDeniedError(
                f"replay {replay.session_id!r} is controlled by whoever opened it; open your "
                "own replay of the recording to seek it"
            )
        if request.pause and request.resume:
            raise InvalidRequestError("pause or resume, not both")
        replay.control(  # all checked before any is applied
            seek_t_ns=request.seek_t_ns or None,
            speed=request.speed or None,
            paused=True if request.pause else False if request.resume else None,
        )
        return replay_message(replay)
