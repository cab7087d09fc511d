"""holo.v1 video messages <-> the records of :mod:`holo.video.frames` and tracks.

The server and the client SDK both use these (as :mod:`holo.wire.session` for sessions).
Checked at the edge: intrinsics and camera poses must be finite, codec parameters complete.
"""

from __future__ import annotations

import math
from fractions import Fraction

from holo.errors import InvalidRequestError
from holo.session.records import Pose
from holo.v1 import common_pb2, video_pb2
from holo.video.frames import CameraPose, CodecParams, Frame, Intrinsics, PushedUnit
from holo.video.relay import Skipped, Track
from holo.wire.common import pose_from_message, pose_message

__all__ = [
    "KIND_NAMES",
    "KIND_VALUES",
    "camera_pose_from_message",
    "camera_pose_message",
    "codec_from_message",
    "codec_message",
    "frame_from_message",
    "frame_message",
    "intrinsics_from_message",
    "intrinsics_message",
    "pushed_from_message",
    "pushed_message",
    "skipped_message",
    "track_info_message",
    "watch_message",
]

KIND_VALUES = {
    "endoscope": video_pb2.TRACK_KIND_ENDOSCOPE,
    "room_camera": video_pb2.TRACK_KIND_ROOM_CAMERA,
    "headset_camera": video_pb2.TRACK_KIND_HEADSET_CAMERA,
    "other": video_pb2.TRACK_KIND_OTHER,
}
KIND_NAMES = {v: k for k, v in KIND_VALUES.items()}


def codec_message(p: CodecParams) -> video_pb2.CodecParameters:
    rate = p.frame_rate or Fraction(0, 1)
    return video_pb2.CodecParameters(
        codec=p.codec,
        width=p.width,
        height=p.height,
        extradata=p.extradata,
        time_base_num=p.time_base.numerator,
        time_base_den=p.time_base.denominator,
        frame_rate_num=rate.numerator,
        frame_rate_den=rate.denominator if rate else 0,
    )


def codec_from_message(m: video_pb2.CodecParameters) -> CodecParams:
    if not m.codec or not m.width or not m.height:
        raise InvalidRequestError(
            "codec parameters need the codec name (e.g. 'h264'), width and height"
        )
    if not m.time_base_num or not m.time_base_den:
        raise InvalidRequestError("codec parameters need the time base of the pts, e.g. 1/90000")
    rate = Fraction(m.frame_rate_num, m.frame_rate_den) if m.frame_rate_den else None
    return CodecParams(
        codec=m.codec,
        width=m.width,
        height=m.height,
        extradata=m.extradata,
        time_base=Fraction(m.time_base_num, m.time_base_den),
        frame_rate=rate or None,
    )


def intrinsics_from_message(m: video_pb2.Intrinsics) -> Intrinsics:
    values = (m.fx, m.fy, m.cx, m.cy)
    if not all(map(math.isfinite, values)) or m.fx <= 0 or m.fy <= 0:
        raise InvalidRequestError("camera intrinsics need finite fx, fy > 0 and cx, cy, in pixels")
    return Intrinsics(*values)


def intrinsics_message(i: Intrinsics) -> video_pb2.Intrinsics:
    return video_pb2.Intrinsics(fx=i.fx, fy=i.fy, cx=i.cx, cy=i.cy)


def camera_pose_from_message(m: common_pb2.Pose) -> CameraPose:
    pose = pose_from_message(m, "camera pose")
    return CameraPose(pose.position, pose.rotation)


def camera_pose_message(p: CameraPose) -> common_pb2.Pose:
    return pose_message(Pose(p.position, p.rotation))


def frame_message(f: Frame) -> video_pb2.VideoFrame:
    m = video_pb2.VideoFrame(
        index=f.index,
        t_ns=f.t_ns,
        pts=f.pts,
        has_dts=f.dts is not None and f.dts != f.pts,
        dts=f.dts or 0,
        duration=f.duration,
        keyframe=f.keyframe,
        data=f.data,
    )
    _set_camera(m, f.intrinsics, f.pose)
    return m


def _set_camera(
    m: video_pb2.VideoFrame | video_pb2.PushedFrame,
    intrinsics: Intrinsics | None,
    pose: CameraPose | None,
) -> None:
    """The optional camera fields a frame carries, set where known."""
    if intrinsics is not None:
        m.intrinsics.CopyFrom(intrinsics_message(intrinsics))
    if pose is not None:
        m.camera_pose.CopyFrom(camera_pose_message(pose))


def frame_from_message(m: video_pb2.VideoFrame) -> Frame:
    return Frame(
        index=m.index,
        t_ns=m.t_ns,
        pts=m.pts,
        dts=m.dts if m.has_dts else m.pts,
        duration=m.duration,
        keyframe=m.keyframe,
        data=m.data,
        intrinsics=intrinsics_from_message(m.intrinsics) if m.HasField("intrinsics") else None,
        pose=camera_pose_from_message(m.camera_pose) if m.HasField("camera_pose") else None,
    )


def pushed_message(u: PushedUnit) -> video_pb2.PushedFrame:
    m = video_pb2.PushedFrame(
        data=u.data,
        pts=u.pts,
        keyframe=u.keyframe,
        capture_t_ns=u.capture_t_ns,
        has_dts=u.dts is not None,
        dts=u.dts or 0,
    )
    _set_camera(m, u.intrinsics, u.pose)
    return m


def pushed_from_message(m: video_pb2.PushedFrame) -> PushedUnit:
    return PushedUnit(
        m.data,
        m.pts,
        m.keyframe,
        capture_t_ns=m.capture_t_ns,
        dts=m.dts if m.has_dts else None,
        intrinsics=intrinsics_from_message(m.intrinsics) if m.HasField("intrinsics") else None,
        pose=camera_pose_from_message(m.camera_pose) if m.HasField("camera_pose") else None,
    )


def track_info_message(track: Track) -> video_pb2.TrackInfo:
    return video_pb2.TrackInfo(
        track_id=video_pb2.TrackId(value=track.track_id),
        session_id=common_pb2.SessionId(value=track.session_id),
        name=track.name,
        kind=KIND_VALUES.get(track.kind, video_pb2.TRACK_KIND_UNSPECIFIED),
        codec=codec_message(track.params),
        frames=track.frames,
        last_t_ns=track.last_t_ns,
        live=track.live,
        ended_reason=track.ended_reason,
    )


def skipped_message(s: Skipped) -> video_pb2.VideoMessage:
    return video_pb2.VideoMessage(
        skipped=video_pb2.FramesSkipped(
            first_index=s.first_index, next_index=s.next_index, reason=s.reason
        )
    )


def watch_message(item: Frame | Skipped | Track, *, ended: bool = False) -> video_pb2.VideoMessage:
    """A WatchVideo stream message: a frame, what was skipped, or the track itself (its
    header first; ``ended`` at the end)."""
    if isinstance(item, Frame):
        return video_pb2.VideoMessage(frame=frame_message(item))
    if isinstance(item, Skipped):
        return skipped_message(item)
    if ended:
        return video_pb2.VideoMessage(ended=track_info_message(item))
    return video_pb2.VideoMessage(header=video_pb2.TrackHeader(track=track_info_message(item)))
