"""The video side of the SDK (grpc.aio): tracks, frames, recordings, replays, the clock.

:meth:`VideoClient.watch` yields a track's frames as :class:`holo.video.frames.Frame`
records (with their session-clock ``t_ns``); :meth:`VideoClient.push` sends
:class:`holo.video.frames.PushedUnit` records; pair them with the holograms of their moment
through :class:`holo.client.timeline.FrameSync` fed by a
:class:`holo.client.session.SessionClient` with a timeline. :meth:`VideoClient.clock`
gives a :class:`holo.client.clock.ClockSync` on the same channel.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from grpc import aio

from holo.client.channel import aio_channel_for, call_metadata, client_error, read_ca
from holo.client.clock import ClockSync
from holo.v1 import common_pb2, video_pb2, video_pb2_grpc
from holo.video.frames import CodecParams, Frame, PushedUnit
from holo.wire.video import (
    KIND_VALUES,
    codec_from_message,
    codec_message,
    frame_from_message,
    pushed_message,
)

__all__ = ["VideoClient", "WatchItem"]


@dataclass(frozen=True, slots=True)
class WatchItem:
    """One message of a watched track: ``kind`` is "header" (``params`` set), "frame"
    (``frame`` set), "skipped" (``skipped`` = (first_index, next_index)) or "ended"."""

    kind: str
    frame: Frame | None = None
    params: CodecParams | None = None
    skipped: tuple[int, int] | None = None
    info: video_pb2.TrackInfo | None = None


class VideoClient:
    """One channel to a holo node for video; ``token`` names the case and role."""

    def __init__(
        self,
        server: str,
        *,
        token: str | None = None,
        ca: str | os.PathLike[str] | bytes | None = None,
        insecure: bool = False,
    ) -> None:
        self.metadata = call_metadata(token)
        self.channel = aio_channel_for(server, ca=read_ca(ca), insecure=insecure)
        self._stub = video_pb2_grpc.VideoServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def _call(self, method: str, request: Any, timeout: float = 30) -> Any:
        try:
            return await getattr(self._stub, method)(
                request, metadata=self.metadata, timeout=timeout
            )
        except aio.AioRpcError as err:
            raise client_error(err) from None

    def clock(self, session_id: str = "", **kwargs: Any) -> ClockSync:
        """The session clock: the node's, or that of the session ``session_id`` (a replay's
        runs at its speed and jumps on a seek)."""
        return ClockSync(self.channel, metadata=self.metadata, session_id=session_id, **kwargs)

    # tracks ---------------------------------------------------------------------------

    async def open_track(
        self,
        session_id: str,
        name: str,
        kind: str = "endoscope",
        *,
        file: str = "",
        url: str = "",
        device: str = "",
        push: CodecParams | None = None,
        loop: bool = False,
    ) -> video_pb2.TrackInfo:
        """Start a track from a file on the server (relative to its media folder), a URL,
        a capture device, or frames this client will push (give their codec)."""
        source = video_pb2.VideoSource(loop=loop)
        given = {"file": file, "url": url, "device": device}
        for field, value in given.items():  # a oneof: set only what was given
            if value:
                setattr(source, field, value)
        if push is not None:
            source.push.codec.CopyFrom(codec_message(push))
        request = video_pb2.OpenTrackRequest(
            session_id=common_pb2.SessionId(value=session_id),
            name=name,
            kind=KIND_VALUES.get(kind, video_pb2.TRACK_KIND_UNSPECIFIED),
            source=source,
        )
        info: video_pb2.TrackInfo = await self._call("OpenTrack", request, timeout=60)
        return info

    async def push(self, track_id: str, units: Sequence[PushedUnit]) -> video_pb2.PushFramesReply:
        """Push access units into a track this client opened with ``push=`` codec."""
        request = video_pb2.PushFramesRequest(
            track_id=video_pb2.TrackId(value=track_id),
            frames=[pushed_message(u) for u in units],
        )
        reply: video_pb2.PushFramesReply = await self._call("PushFrames", request)
        return reply

    async def close_track(self, track_id: str) -> video_pb2.TrackInfo:
        request = video_pb2.CloseTrackRequest(track_id=video_pb2.TrackId(value=track_id))
        info: video_pb2.TrackInfo = await self._call("CloseTrack", request)
        return info

    async def tracks(self, session_id: str) -> list[video_pb2.TrackInfo]:
        request = video_pb2.ListTracksRequest(session_id=common_pb2.SessionId(value=session_id))
        reply = await self._call("ListTracks", request)
        return list(reply.tracks)

    async def watch(self, track_id: str, session_id: str = "") -> AsyncIterator[WatchItem]:
        """The track's stream, from its latest keyframe. Ends when the track does."""
        request = video_pb2.WatchVideoRequest(
            track_id=video_pb2.TrackId(value=track_id),
            session_id=common_pb2.SessionId(value=session_id),
        )
        call = self._stub.WatchVideo(request, metadata=self.metadata)
        try:
            async for message in call:
                kind = message.WhichOneof("kind")
                if kind == "frame":
                    yield WatchItem("frame", frame=frame_from_message(message.frame))
                elif kind == "header":
                    track = message.header.track
                    yield WatchItem("header", params=codec_from_message(track.codec), info=track)
                elif kind == "skipped":
                    s = message.skipped
                    yield WatchItem("skipped", skipped=(s.first_index, s.next_index))
                elif kind == "ended":
                    yield WatchItem("ended", info=message.ended)
        except aio.AioRpcError as err:
            raise client_error(err) from None
        finally:
            call.cancel()

    # recordings and replays -----------------------------------------------------------

    async def start_recording(self, session_id: str) -> video_pb2.RecordingInfo:
        request = video_pb2.StartRecordingRequest(session_id=common_pb2.SessionId(value=session_id))
        info: video_pb2.RecordingInfo = await self._call("StartRecording", request)
        return info

    async def stop_recording(self, session_id: str) -> video_pb2.RecordingInfo:
        request = video_pb2.StopRecordingRequest(session_id=common_pb2.SessionId(value=session_id))
        info: video_pb2.RecordingInfo = await self._call("StopRecording", request)
        return info

    async def recordings(self) -> list[video_pb2.RecordingInfo]:
        reply = await self._call("ListRecordings", video_pb2.ListRecordingsRequest())
        return list(reply.recordings)

    async def open_replay(self, recording_id: str, speed: float = 1.0) -> video_pb2.ReplayInfo:
        request = video_pb2.OpenReplayRequest(
            recording_id=video_pb2.RecordingId(value=recording_id), speed=speed
        )
        info: video_pb2.ReplayInfo = await self._call("OpenReplay", request)
        return info

    async def control_replay(
        self,
        session_id: str,
        *,
        seek_t_ns: int = 0,
        speed: float = 0.0,
        pause: bool = False,
        resume: bool = False,
    ) -> video_pb2.ReplayInfo:
        request = video_pb2.ControlReplayRequest(
            session_id=common_pb2.SessionId(value=session_id),
            seek_t_ns=seek_t_ns,
            speed=speed,
            pause=pause,
            resume=resume,
        )
        info: video_pb2.ReplayInfo = await self._call("ControlReplay", request)
        return info
