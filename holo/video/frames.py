"""The units video moves in: a track's codec parameters and its encoded frames.

Transport-neutral (no grpc, no generated code). Ingest (:mod:`holo.video.ingest`) produces
them, the relay (:mod:`holo.video.relay`) fans them out, the recorder
(:mod:`holo.video.recording`) writes them to a container without re-encoding, and replay reads
them back. ``data`` is one access unit exactly as the container or stream carried it (for
H.264/HEVC out of MP4/MKV: length-prefixed NAL units, with the parameter sets in
``CodecParams.extradata``; out of MPEG-TS/RTP/Annex B sources: start-code NAL units and an
empty or Annex B extradata). Nothing here converts between the two: the decoder on the
viewer takes either, given the extradata it came with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

__all__ = [
    "PASSTHROUGH_CODECS",
    "CameraPose",
    "CodecParams",
    "Frame",
    "Intrinsics",
    "PushedUnit",
]

#: Codecs relayed and recorded as received; any other source is transcoded to H.264.
PASSTHROUGH_CODECS = frozenset({"h264", "hevc"})


@dataclass(frozen=True, slots=True)
class CodecParams:
    """What a decoder needs before the first frame of a track."""

    codec: str  # FFmpeg codec name: "h264" or "hevc"
    width: int  # pixels
    height: int
    extradata: bytes  # avcC/hvcC (from MP4/MKV) or Annex B parameter sets; may be empty
    time_base: Fraction  # of Frame.pts / Frame.duration
    frame_rate: Fraction | None = None  # nominal, when the source states one


@dataclass(frozen=True, slots=True)
class Intrinsics:
    """Pinhole camera intrinsics of the frame, in pixels (OpenCV convention)."""

    fx: float
    fy: float
    cx: float
    cy: float


@dataclass(frozen=True, slots=True)
class CameraPose:
    """Camera -> room pose (glTF convention: right-handed, +Y up, metres; quaternion x,y,z,w)."""

    position: tuple[float, float, float]
    rotation: tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class Frame:
    """One encoded access unit of a track.

    ``t_ns`` is the capture time on the session clock, derived from the source's pts mapped
    once at ingest (``t_ns = t0_ns + (pts - pts0) * time_base``), never the arrival time.
    ``index`` counts frames of the track from 0 in ingest order (decode order).
    """

    index: int
    t_ns: int
    pts: int
    dts: int | None
    duration: int  # in time_base units; 0 when unknown
    keyframe: bool
    data: bytes
    intrinsics: Intrinsics | None = None
    pose: CameraPose | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PushedUnit:
    """One access unit a client pushes (a headset's camera), before the server stamps it.

    ``pts`` (and ``dts`` when it differs: B-frames) in the track's time base;
    ``capture_t_ns`` the capture time on the session clock when the sender synced its
    clock (0: the server maps the pts from its first push); ``intrinsics`` and ``pose``
    (camera -> room) of this frame when known.
    """

    data: bytes
    pts: int
    keyframe: bool
    capture_t_ns: int = 0
    dts: int | None = None
    intrinsics: Intrinsics | None = None
    pose: CameraPose | None = None
