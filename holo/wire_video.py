"""Conversions between holo.v1 video messages and :mod:`holo.video.frames` records.

The server and the client SDK both use these (as :mod:`holo.wire` for sessions). Checked at
the edge: intrinsics and camera poses must be finite, codec parameters complete.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from holo.errors import InvalidRequestError
from holo.v1 import common_pb2, video_pb2
from holo.video.frames import CameraPose, CodecParams, Frame, Intrinsics
from holo.wire import pose_from_message, pose_message

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
    "track_info_message",
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


def camera_pose_from_message(m: common_pb2.Pose) -> CameraPose:
    pose = pose_from_message(m, "camera pose")
    x, y, z = pose["position"]
    qx, qy, qz, qw = pose["rotation"]
    return CameraPose((x, y, z), (qx, qy, qz, qw))


def intrinsics_message(i: Intrinsics) -> video_pb2.Intrinsics:
    return video_pb2.Intrinsics(fx=i.fx, fy=i.fy, cx=i.cx, cy=i.cy)


def camera_pose_message(p: CameraPose) -> common_pb2.Pose:
    return pose_message({"position": list(p.position), "rotation": list(p.rotation)})


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
    if f.intrinsics is not None:
        m.intrinsics.CopyFrom(intrinsics_message(f.intrinsics))
    if f.pose is not None:
        m.camera_pose.CopyFrom(camera_pose_message(f.pose))
    return m


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


def track_info_message(info: dict[str, Any]) -> video_pb2.TrackInfo:
    return video_pb2.TrackInfo(
        track_id=video_pb2.TrackId(value=info["track_id"]),
        session_id=common_pb2.SessionId(value=info["session_id"]),
        name=info["name"],
        kind=KIND_VALUES.get(info["kind"], video_pb2.TRACK_KIND_UNSPECIFIED),
        codec=codec_message(info["params"]),
        frames=info["frames"],
        last_t_ns=info["last_t_ns"],
        live=info["live"],
        ended_reason=info["ended_reason"],
    )
