"""Video a client pushes (a headset's camera): one access unit per call, stamped on the
session clock like any other source (:mod:`holo.video.ingest`).

What a pushed track declares is checked here, before any codec is opened: the picture
(:data:`~holo.video.ingest.MAX_PICTURE_SIDE`, :data:`~holo.video.ingest.MAX_PICTURE_PIXELS`),
the time base (:data:`MIN_TIME_BASE` .. :data:`MAX_TIME_BASE`), the frame rate
(:data:`MAX_FRAME_RATE`), the codec name and the extradata (:data:`MAX_EXTRADATA_BYTES`):
these reach the encoder, every viewer's decoder and the clock arithmetic of every frame.
"""

from __future__ import annotations

from holo.extras import need

need("video", "av", feature="pushed video")

import collections
import logging
import re
import threading
from collections.abc import Iterator
from fractions import Fraction

import av
import av.error
from av.packet import Packet
from av.video.codeccontext import VideoCodecContext

from holo.errors import InvalidRequestError, PreconditionError, VideoError
from holo.video.frames import (
    PASSTHROUGH_CODECS,
    CameraPose,
    CodecParams,
    Frame,
    Intrinsics,
    PushedUnit,
)
from holo.video.ingest import (
    MAX_PICTURE_PIXELS,
    PICTURE_RULE,
    ClockNs,
    VideoSource,
    _H264Encoder,
    _Stamper,
    check_picture,
)

__all__ = [
    "MAX_EXTRADATA_BYTES",
    "MAX_FRAME_RATE",
    "MAX_TIME_BASE",
    "MIN_TIME_BASE",
    "PushSource",
]

logger = logging.getLogger(__name__)

#: The pts unit: a nanosecond (finer says nothing the session clock can hold) to a second
#: (coarser cannot time frames). RTP's 1/90000, milliseconds and 1/fps are all inside.
MIN_TIME_BASE = Fraction(1, 10**9)
MAX_TIME_BASE = Fraction(1)
#: A nominal frame rate above the fastest camera a headset or endoscope tower has (240 fps).
MAX_FRAME_RATE = 240
#: Codec configuration: an avcC/hvcC with every parameter set is a few hundred bytes, a
#: few KiB with SEI. It goes to every viewer with the track (eight tracks a session: 512
#: KiB at most in a ListTracks reply, well inside a client's 4 MiB).
MAX_EXTRADATA_BYTES = 64 << 10
#: FFmpeg codec names: "h264", "hevc", "mjpeg", "mpeg4", "vp8", ...
_CODEC_NAME = re.compile(r"[a-z0-9_]{1,32}")
_INT64 = (-(1 << 63), (1 << 63) - 1)  # what a t_ns, pts or dts on the wire holds


class PushSource(VideoSource):
    """Frames pushed by a client (a headset's camera), one access unit per :meth:`push`.

    H.264 and HEVC are passed through; any other codec FFmpeg can decode with one picture
    per access unit and no reordering (MJPEG, VP8, MPEG-4 part 2 without B-frames) is
    transcoded to H.264. :meth:`push` returns the stamped frame; :meth:`frames` yields the
    same frames to a consumer thread, from a queue of at most ``max_pending`` frames (the
    oldest are dropped, with a warning, when the consumer falls behind). :meth:`close`
    ends the stream: :meth:`frames` yields what was pushed, then ends.

    Parameters
    ----------
    codec
        FFmpeg codec name of the pushed data: ``"h264"``, ``"hevc"``, ``"mjpeg"``, ...
    width, height
        Picture size, pixels (see the module's bounds).
    extradata
        Codec configuration (avcC/hvcC or Annex B parameter sets); may be empty.
    time_base
        Unit of the pushed pts, seconds: :data:`MIN_TIME_BASE` .. :data:`MAX_TIME_BASE`.
    clock_ns
        The session clock; read once, at the first push, unless it states ``capture_t_ns``.
    frame_rate
        Nominal frame rate, when known (sets the GOP of transcoded video).
    intrinsics
        Default intrinsics of every frame; a push may give its own.
    max_skew_ns
        When given, a push whose pts maps further than this from ``clock_ns()`` is refused
        (a jump in the sender's pts); a server passes
        :data:`~holo.video.ingest.MAX_REALTIME_SKEW_NS`. Stated capture times are the
        caller's to check (:meth:`holo.session.clock.SessionClock.stamp`).

    Raises
    ------
    holo.errors.InvalidRequestError
        A declaration outside the module's bounds, or a codec FFmpeg cannot decode.
    holo.errors.VideoError
        libx264 cannot be opened for it.
    """

    def __init__(
        self,
        codec: str,
        width: int,
        height: int,
        extradata: bytes,
        time_base: Fraction,
        *,
        clock_ns: ClockNs,
        frame_rate: Fraction | None = None,
        intrinsics: Intrinsics | None = None,
        max_pending: int = 300,
        max_skew_ns: int | None = None,
    ) -> None:
        if not isinstance(codec, str) or not _CODEC_NAME.fullmatch(codec):
            shown = repr(codec[:32] + "...") if isinstance(codec, str) and codec else repr(codec)
            raise InvalidRequestError(
                f"push codec {shown}: give an FFmpeg codec name such as 'h264' or 'mjpeg'"
            )
        for name, value in (("width", width), ("height", height), ("max_pending", max_pending)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise InvalidRequestError(f"push {name} must be a positive int, not {value!r}")
        transcoded = codec not in PASSTHROUGH_CODECS
        # A passed-through picture is decoded by every viewer: the same bound, odd sides
        # allowed (only libx264's 4:2:0 needs even ones).
        if not check_picture(width + width % 2, height + height % 2) or (
            transcoded and not check_picture(width, height)
        ):
            raise InvalidRequestError(
                f"push picture {width} x {height}: {PICTURE_RULE}; scale it on the sender"
            )
        if not isinstance(extradata, bytes | bytearray | memoryview):
            raise InvalidRequestError(
                f"push extradata must be bytes, not {type(extradata).__name__}"
            )
        if len(extradata) > MAX_EXTRADATA_BYTES:
            raise InvalidRequestError(
                f"push extradata of {len(extradata)} bytes: at most {MAX_EXTRADATA_BYTES} "
                "(codec parameter sets only)"
            )
        if not isinstance(time_base, Fraction) or not MIN_TIME_BASE <= time_base <= MAX_TIME_BASE:
            raise InvalidRequestError(
                f"push time_base {time_base!s}: give a Fraction from 1/1000000000 to 1 s "
                "(e.g. Fraction(1, 90000))"
            )
        if frame_rate is not None and (
            not isinstance(frame_rate, Fraction) or not 0 < frame_rate <= MAX_FRAME_RATE
        ):
            raise InvalidRequestError(
                f"push frame rate {frame_rate!s}: give one up to {MAX_FRAME_RATE} frames/s, or none"
            )
        if intrinsics is not None and not isinstance(intrinsics, Intrinsics):
            raise InvalidRequestError(f"intrinsics must be an Intrinsics, not {intrinsics!r}")
        self._clock_ns = clock_ns
        self._max_skew_ns = max_skew_ns
        self._intrinsics = intrinsics
        self._decoder: VideoCodecContext | None = None
        self._encoder: _H264Encoder | None = None
        if not transcoded:
            self.params = CodecParams(codec, width, height, bytes(extradata), time_base, frame_rate)
        else:
            try:
                decoder = av.CodecContext.create(codec, "r")
            except (av.error.FFmpegError, ValueError) as err:
                raise InvalidRequestError(
                    f"push codec {codec!r} cannot be decoded here; push H.264 or HEVC"
                ) from err
            if not isinstance(decoder, VideoCodecContext):
                raise InvalidRequestError(f"push codec {codec!r} is not a video codec")
            decoder.thread_count = 1  # frame threads would delay pictures past their push
            # A picture far larger than any declared one is refused by FFmpeg before it is
            # allocated (a JPEG header may state 65535 x 65535 in a few bytes). FFmpeg
            # counts coded sizes, rounded up to 16-pixel blocks: twice the bound is room.
            decoder.options = {"max_pixels": str(2 * MAX_PICTURE_PIXELS)}
            if extradata:
                decoder.extradata = bytes(extradata)
            self._decoder = decoder
            self._encoder = _H264Encoder(width, height, time_base, frame_rate)
            self.params = CodecParams(
                "h264", width, height, self._encoder.extradata, time_base, frame_rate
            )
        self._stamper = _Stamper(time_base)
        self._last_dts: int | None = None
        self._index = 0
        self._pending: collections.deque[Frame] = collections.deque()
        self._max_pending = max_pending
        self.dropped = 0  #: frames dropped because the consumer of frames() fell behind
        self._cond = threading.Condition()
        self._closed = False
        self._started = False

    def push(self, unit: PushedUnit) -> Frame:
        """Validate, stamp and queue one access unit.

        ``unit.data`` is one access unit in ``params.codec`` (before transcoding), non-empty;
        the first push must be a keyframe, and decode times (``dts``, else ``pts``) must
        strictly increase from push to push. ``unit.intrinsics`` defaults to the source's.
        Without ``unit.capture_t_ns``, ``t_ns`` follows the pts from the anchor taken at the
        first push.

        Raises
        ------
        holo.errors.InvalidRequestError
            A field of the wrong type, empty data, a decode time not after the previous
            one, a first push that is not a keyframe, or data the decoder refuses.
        holo.errors.PreconditionError
            The source is closed.
        """
        data, pts, keyframe, dts = unit.data, unit.pts, unit.keyframe, unit.dts
        intrinsics, pose = unit.intrinsics, unit.pose
        capture_t_ns = unit.capture_t_ns or None
        if not isinstance(data, bytes | bytearray | memoryview) or not len(data):
            raise InvalidRequestError(
                f"push data must be non-empty bytes (one access unit), got {_describe(data)}"
            )
        for name, value in (("pts", pts), ("dts", dts), ("capture_t_ns", capture_t_ns)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise InvalidRequestError(f"push {name} must be an int, not {value!r}")
        if not isinstance(pts, int):
            raise InvalidRequestError("push pts is required")
        for name, value in (("pts", pts), ("dts", dts), ("capture_t_ns", capture_t_ns)):
            if value is not None and not _INT64[0] <= value <= _INT64[1]:
                raise InvalidRequestError(f"push {name} {value} is outside the int64 range")
        if not isinstance(keyframe, bool):
            raise InvalidRequestError(f"push keyframe must be a bool, not {keyframe!r}")
        if intrinsics is not None and not isinstance(intrinsics, Intrinsics):
            raise InvalidRequestError(f"push intrinsics must be an Intrinsics, not {intrinsics!r}")
        if pose is not None and not isinstance(pose, CameraPose):
            raise InvalidRequestError(f"push pose must be a CameraPose, not {pose!r}")
        if dts is not None and dts > pts:
            raise InvalidRequestError(
                f"push dts {dts} is after pts {pts}; a frame is decoded first"
            )
        with self._cond:
            if self._closed:
                raise PreconditionError("the push source is closed; open a new one to push again")
            decode_ts = pts if dts is None else dts
            if self._last_dts is None and not keyframe:
                raise InvalidRequestError(
                    "the first push must be a keyframe; wait for the encoder's next IDR frame"
                )
            if self._last_dts is not None and decode_ts <= self._last_dts:
                raise InvalidRequestError(
                    f"push decode time {decode_ts} is not after the previous {self._last_dts}; "
                    "timestamps must increase (push in decode order)"
                )
            t_ns = self._t_ns(pts, capture_t_ns)  # checked before anything is taken
            payload, keyframe = self._encode(bytes(data), pts, dts, keyframe)
            self._last_dts = decode_ts
            self._stamper.anchor(pts, t_ns)  # the first push's time; later ones follow it
            frame = Frame(
                index=self._index,
                t_ns=t_ns,
                pts=pts,
                dts=dts,
                duration=0,
                keyframe=keyframe,
                data=payload,
                intrinsics=self._intrinsics if intrinsics is None else intrinsics,
                pose=pose,
            )
            self._index += 1
            if len(self._pending) >= self._max_pending:
                self._pending.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 100 == 0:
                    logger.warning(
                        "push source: frames() consumer is behind, %d frames dropped", self.dropped
                    )
            self._pending.append(frame)
            self._cond.notify_all()
        return frame

    def _t_ns(self, pts: int, capture_t_ns: int | None) -> int:
        """The session time of a push: as stated, else now for the first and mapped from
        the first's pts for the others; refused when a pts jump puts it far off."""
        if capture_t_ns is not None:
            return capture_t_ns
        if self._stamper.t0_ns is None:
            return self._clock_ns()
        t_ns = self._stamper.t_ns(pts)
        now = self._clock_ns() if self._max_skew_ns is not None else t_ns
        skew_ns = t_ns - now
        if not _INT64[0] <= t_ns <= _INT64[1] or (
            self._max_skew_ns is not None and abs(skew_ns) > self._max_skew_ns
        ):
            off = (
                f"{skew_ns / 1e9:+.0f} s from the session clock"
                if skew_ns
                else "outside the int64 range"
            )
            raise InvalidRequestError(
                f"push pts {pts} maps to a capture time {off}; pts must follow the capture "
                "time: open a new track after a jump"
            )
        return t_ns

    def _encode(self, data: bytes, pts: int, dts: int | None, keyframe: bool) -> tuple[bytes, bool]:
        """The bytes to relay and their keyframe flag: as pushed, or transcoded to H.264."""
        if self._decoder is None or self._encoder is None:
            return data, keyframe
        packet = Packet(data)
        packet.pts, packet.dts = pts, dts
        packet.time_base = self.params.time_base
        try:
            pictures = self._decoder.decode(packet)
        except av.error.FFmpegError as err:
            raise InvalidRequestError(
                f"the {self._decoder.name} decoder refused the push at pts {pts}: {err.strerror}"
            ) from err
        if len(pictures) != 1:
            raise InvalidRequestError(
                f"the push at pts {pts} decoded to {len(pictures)} pictures, not 1; push a "
                "codec without frame reordering (no B-frames), or H.264/HEVC"
            )
        picture = pictures[0]
        picture.pts = pts
        out = self._encoder.encode(picture)
        if len(out) != 1:  # tune=zerolatency: one frame in, one packet out
            raise VideoError(f"libx264 returned {len(out)} packets for the push at pts {pts}")
        return bytes(out[0]), out[0].is_keyframe

    def frames(self) -> Iterator[Frame]:
        with self._cond:
            if self._started:
                raise PreconditionError("frames() of this push source was already called")
            self._started = True
        return self._drain()

    def _drain(self) -> Iterator[Frame]:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                frame = self._pending.popleft()
            yield frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _describe(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"{len(value)} bytes"
    return type(value).__name__
