"""Video ingest: turn a file, a network stream or a capture device into
:class:`~holo.video.frames.Frame` s stamped on the session clock (pushed access units:
:mod:`holo.video.push`).

H.264 and HEVC are passed through: each frame's ``data`` is the packet exactly as FFmpeg
demuxed it, and ``CodecParams.extradata`` is the stream's own. Anything else FFmpeg can
decode (MPEG-4 part 2, MJPEG, VP8, ...) is transcoded to H.264 with libx264 for low
latency, each output frame keeping its source frame's pts, so capture times still follow
the source's clock.

Capture time. ``t_ns = t0_ns + round((pts - pts0) * time_base * 1e9)`` with ``t0_ns`` taken
once, from ``clock_ns()`` when the first packet is read, and ``pts0`` that packet's pts. It
is never the arrival time of later frames, so network jitter does not move them. Two
sources state a better anchor and are trusted instead:

* RTSP: when FFmpeg learns ``start_time_realtime`` from the RTCP sender reports (wall-clock
  microseconds at which ``pts == 0`` was captured, by FFmpeg's definition), ``t0_ns`` is
  that time and ``pts0`` is 0. This assumes the session clock is wall time anchored once
  (``clock_ns()`` close to ``time.time_ns()``); an anchor more than
  :data:`MAX_REALTIME_SKEW_NS` away from ``clock_ns()`` is ignored with a warning.
* :class:`holo.video.push.PushSource`: a headset that has synced its clock passes
  ``capture_t_ns``.

Everything here blocks (demuxing, decoding, encoding, pacing): run it in a thread, not on
the event loop. PyAV releases the GIL inside FFmpeg calls.
"""

from __future__ import annotations

from holo.extras import need

need("video", "av", feature="video ingest")

import logging
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import av
import av.error
from av.codec.context import Flags
from av.container import InputContainer
from av.packet import Packet
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType, VideoFrame
from av.video.stream import VideoStream

from holo.errors import InvalidRequestError, PreconditionError, VideoError
from holo.video.frames import PASSTHROUGH_CODECS, CodecParams, Frame, Intrinsics

__all__ = [
    "LIVE_SCHEMES",
    "MAX_PICTURE_PIXELS",
    "MAX_PICTURE_SIDE",
    "MAX_REALTIME_SKEW_NS",
    "ClockNs",
    "VideoSource",
    "open_source",
]

logger = logging.getLogger(__name__)

ClockNs = Callable[[], int]

#: URL schemes read as live streams (not paced, not loopable).
LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtp", "srt", "udp", "tcp", "http", "https", "rtmp"})
#: A stream-stated wall-clock anchor further than this from ``clock_ns()`` is not trusted
#: (a camera with an unset clock); a minute is far above any network or buffering delay.
MAX_REALTIME_SKEW_NS = 60 * 10**9
#: libx264 settings for transcoded sources: no lookahead, no B-frames, one frame in, one
#: frame out (tune=zerolatency), at the cost of ~10-20 % more bitrate than a slower preset.
X264_OPTIONS = {"preset": "veryfast", "tune": "zerolatency", "bf": "0"}
#: GOP of transcoded video when the source states no frame rate (then 1 s at 30 fps).
DEFAULT_GOP = 30
#: A transcoded source whose decoder fails on this many packets in a row is given up.
MAX_DECODE_FAILURES = 25
#: The largest picture transcoded here or declared by a pushed track: 4096 pixels a side
#: and 4096 x 2304 in all, H.264 level 5.1's 36,864 macroblocks of 16 x 16 (the most a
#: headset's hardware decoder takes; a HoloLens 2 camera gives at most 3904 x 2196, a 4K
#: endoscope 3840 x 2160). One yuv420p picture of the 100000 x 100000 a crafted push
#: declared would be 15 GB; libx264 refused it, as INTERNAL, on the event loop.
MAX_PICTURE_SIDE = 4096
MAX_PICTURE_PIXELS = 36_864 * 16 * 16
PICTURE_RULE = (
    f"at most {MAX_PICTURE_SIDE} pixels a side and {MAX_PICTURE_PIXELS} in all (4096 x 2304), "
    "with even sides when transcoded"
)


class VideoSource(ABC):
    """A track of encoded frames from one source.

    ``params`` is known once the source is open. :meth:`frames` may be iterated once; it
    blocks, and ends at the end of the stream or after :meth:`close` (which any thread may
    call). Use it as a context manager to close it.
    """

    params: CodecParams

    @abstractmethod
    def frames(self) -> Iterator[Frame]:
        """The frames in decode order, ``index`` counting from 0."""

    @abstractmethod
    def close(self) -> None:
        """Stop the source and release it; idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Stamper:
    """Maps pts to the session clock: ``t0_ns + (pts - pts0) * time_base``, anchored once."""

    def __init__(self, time_base: Fraction) -> None:
        self.time_base = time_base
        self.t0_ns: int | None = None
        self.pts0 = 0

    def anchor(self, pts: int, t0_ns: int) -> None:
        if self.t0_ns is None:
            self.t0_ns, self.pts0 = t0_ns, pts

    def t_ns(self, pts: int) -> int:
        assert self.t0_ns is not None, "anchor() first"
        return self.t0_ns + round((pts - self.pts0) * self.time_base * 10**9)


def _frame_ticks(rate: Fraction | None, time_base: Fraction) -> int:
    """One nominal frame duration in ``time_base`` units, 0 when the rate is unknown."""
    if not rate:
        return 0
    return max(1, round(1 / (rate * time_base)))


class _H264Encoder:
    """libx264 for sources that cannot be passed through; keeps each frame's pts."""

    def __init__(
        self, width: int, height: int, time_base: Fraction, frame_rate: Fraction | None
    ) -> None:
        if not check_picture(width, height):
            raise VideoError(
                f"cannot transcode {width} x {height} video: {PICTURE_RULE}; send H.264 or "
                "HEVC, or a smaller picture"
            )
        ctx = av.CodecContext.create("libx264", "w")
        assert isinstance(ctx, VideoCodecContext)
        try:
            ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
            ctx.time_base = time_base
            if frame_rate:
                ctx.framerate = frame_rate
            ctx.gop_size = max(1, round(frame_rate)) if frame_rate else DEFAULT_GOP
            ctx.max_b_frames = 0
            ctx.options = dict(X264_OPTIONS)
            # Parameter sets go to extradata (Annex B), the one place CodecParams carries them.
            ctx.flags |= Flags.global_header
            ctx.open()
        except (av.error.FFmpegError, ValueError) as err:  # OverflowError is a ValueError
            raise VideoError(
                f"libx264 cannot encode {width} x {height} video at time base {time_base} and "
                f"frame rate {frame_rate} ({_reason(err)}); send H.264 or HEVC"
            ) from err
        self.ctx = ctx
        self.extradata = bytes(ctx.extradata or b"")

    def encode(self, frame: VideoFrame | None) -> list[Packet]:
        """Packets for ``frame`` (None: flush); a picture of another size or format is
        scaled and converted to the encoder's first."""
        try:
            if frame is not None:
                if (frame.width, frame.height, frame.format.name) != (
                    self.ctx.width,
                    self.ctx.height,
                    "yuv420p",
                ):
                    pts = frame.pts
                    frame = frame.reformat(self.ctx.width, self.ctx.height, "yuv420p")
                    frame.pts = pts
                # libx264 turns a decoded I picture (every MJPEG frame) into a forced
                # keyframe: let the GOP decide instead.
                frame.pict_type = PictureType.NONE
                frame.time_base = self.ctx.time_base
            return self.ctx.encode(frame)
        except (av.error.FFmpegError, ValueError) as err:
            at = "the end" if frame is None else f"pts {frame.pts}"
            raise VideoError(f"libx264 failed at {at} ({_reason(err)})") from err


def check_picture(width: int, height: int) -> bool:
    """Whether a ``width`` x ``height`` picture is within :data:`MAX_PICTURE_SIDE` and
    :data:`MAX_PICTURE_PIXELS` (and libx264's 4:2:0, which needs even sides)."""
    return (
        0 < width <= MAX_PICTURE_SIDE
        and 0 < height <= MAX_PICTURE_SIDE
        and width * height <= MAX_PICTURE_PIXELS
        and width % 2 == 0
        and height % 2 == 0
    )


def _reason(err: Exception) -> str:
    """FFmpeg's one-line reason, without PyAV's echo of the call and its options."""
    return getattr(err, "strerror", None) or type(err).__name__


def _decode(
    ctx: VideoCodecContext, packet: Packet | None, where: str, failures: list[int]
) -> list[VideoFrame]:
    """Decode tolerantly: a corrupt packet is skipped; many in a row end the source."""
    try:
        frames = ctx.decode(packet)
    except av.error.FFmpegError as err:
        failures[0] += 1
        logger.warning("%s: skipped a packet the %s decoder refused: %s", where, ctx.name, err)
        if failures[0] >= MAX_DECODE_FAILURES:
            raise VideoError(
                f"the {ctx.name} decoder refused {failures[0]} packets in a row from {where}; "
                "the stream is corrupt or not what it claims to be",
                url=where,
            ) from err
        return []
    failures[0] = 0
    return frames


def _timed(
    packets: Iterable[Packet], nominal: int, where: str
) -> Iterator[tuple[Packet, int, int | None, int]]:
    """Yield ``(packet, pts, dts, duration)`` for every non-empty packet.

    pts falls back to dts. A packet with neither gets one from its duration: RTSP's first
    packet (FFmpeg stamps it only once RTCP has been seen) is placed one duration before
    the next stamped packet; a raw elementary stream with no timestamps at all is counted
    from 0 in durations (the packet's own, else the nominal frame rate).
    """
    held: tuple[Packet, int] | None = None
    expected: int | None = None  # pts + duration of the previous packet
    for packet in packets:
        if packet.size == 0:  # the demuxer's end-of-stream flush packet
            continue
        duration = packet.duration or nominal
        pts = packet.pts if packet.pts is not None else packet.dts
        if pts is None and not duration:
            raise VideoError(
                f"a packet of {where} has no pts, dts or duration; remux it into a container "
                "with timestamps (e.g. ffmpeg -r 30 -i IN -c copy OUT.mp4)",
                url=where,
            )
        if pts is None:
            if expected is None and held is None:
                held = (packet, duration)
                continue
            if expected is None:
                assert held is not None
                yield held[0], 0, None, held[1]
                expected, held = held[1], None
            pts = expected
        elif held is not None:
            yield held[0], pts - held[1], None, held[1]
            held = None
        yield packet, pts, packet.dts, duration
        expected = pts + duration
    if held is not None:
        yield held[0], 0, None, held[1]


def _parse_url(url: str) -> tuple[str, str | None, bool]:
    """``(target for av.open, format or None, live)`` of a source URL."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequestError(
            f"video source {url!r} is empty; give a file path, a stream URL or v4l2:/dev/videoN"
        )
    if url.startswith("v4l2:"):
        device = url[len("v4l2:") :]
        if not device:
            raise InvalidRequestError(
                f"video source {url!r} names no device; e.g. v4l2:/dev/video0"
            )
        return device, "v4l2", True
    if url.startswith("file:"):
        return url[len("file:") :].removeprefix("//"), None, False
    scheme = urlsplit(url).scheme.lower()
    if "://" in url:
        if scheme not in LIVE_SCHEMES:
            raise InvalidRequestError(
                f"video source {url!r} has an unsupported scheme {scheme!r}; use a file path, "
                f"v4l2:/dev/videoN or one of {', '.join(sorted(LIVE_SCHEMES))}"
            )
        return url, None, True
    return url, None, False


class _ContainerSource(VideoSource):
    """A source FFmpeg demuxes: a file, a network stream or a capture device."""

    def __init__(
        self,
        url: str,
        *,
        clock_ns: ClockNs,
        loop: bool,
        realtime: bool | None,
        options: dict[str, str] | None,
        intrinsics: Intrinsics | None,
        timeout_s: float,
    ) -> None:
        target, fmt, live = _parse_url(url)
        if loop and live:
            raise InvalidRequestError(f"loop=True replays files only; {url!r} is a live source")
        if intrinsics is not None and not isinstance(intrinsics, Intrinsics):
            raise InvalidRequestError(f"intrinsics must be an Intrinsics, not {intrinsics!r}")
        if not (isinstance(timeout_s, int | float) and timeout_s > 0):
            raise InvalidRequestError(f"timeout_s must be a positive number, not {timeout_s!r}")
        self.url = url
        self._target, self._format, self._live = target, fmt, live
        self._clock_ns = clock_ns
        self._loop = loop
        self._realtime = (not live) if realtime is None else realtime
        self._options = {str(k): str(v) for k, v in (options or {}).items()}
        self._timeout = timeout_s if live else None
        self._interrupt = self._timeout
        if "listen" in self._options.get("rtsp_flags", ""):
            # RTSP listen mode (FFmpeg 8, PyAV 18) hangs for good when PyAV's interrupt
            # callback is installed, and its default listen_timeout (-1 s) becomes -1000 ms
            # on the TCP socket, which that option refuses (ERANGE). So state FFmpeg's own
            # timeouts instead: for the publisher to connect (s) and for socket reads (us).
            self._options.setdefault("listen_timeout", str(math.ceil(timeout_s)))
            self._options.setdefault("timeout", str(round(timeout_s * 1e6)))
            self._interrupt = None
        self._intrinsics = intrinsics
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._started = self._running = False
        self._container: InputContainer | None = None

        container = self._open()
        try:
            stream = self._video_stream(container)
            ctx = stream.codec_context
            self._stream_index = stream.index
            width, height = ctx.width, ctx.height
            if width <= 0 or height <= 0:
                raise VideoError(
                    f"{url} does not state its picture size; raise the 'probesize' and "
                    "'analyzeduration' options",
                    url=url,
                )
            time_base = stream.time_base
            if not time_base:
                raise VideoError(f"{url} has no time base for its video stream", url=url)
            self._time_base = time_base
            rate = stream.guessed_rate or stream.average_rate
            frame_rate = Fraction(rate) if rate else None
            self._nominal = _frame_ticks(frame_rate, time_base)
            self._encoder: _H264Encoder | None = None
            if ctx.name in PASSTHROUGH_CODECS:
                extradata = bytes(ctx.extradata or b"")
                codec = ctx.name
            else:
                if ctx.codec is None or not ctx.codec.is_decoder:
                    raise VideoError(
                        f"{url} is {ctx.name!r} video, which this FFmpeg cannot decode; send "
                        "H.264 or HEVC",
                        url=url,
                    )
                self._encoder = _H264Encoder(width, height, time_base, frame_rate)
                extradata, codec = self._encoder.extradata, "h264"
            self.params = CodecParams(codec, width, height, extradata, time_base, frame_rate)
        except BaseException:
            container.close()
            raise
        self._container = container
        self._stamper = _Stamper(time_base)
        self._index = 0

    def _open(self) -> InputContainer:
        where = self.url
        try:
            return av.open(
                self._target,
                "r",
                format=self._format,
                options=dict(self._options),
                timeout=self._interrupt,
            )
        except FileNotFoundError as err:
            kind = "capture device" if self._format == "v4l2" else "video file"
            raise VideoError(
                f"{kind} {self._target} does not exist; check the path", url=where
            ) from err
        except av.error.ProtocolNotFoundError as err:
            scheme = where.split(":", 1)[0]
            raise VideoError(
                f"cannot open {where}: the FFmpeg inside PyAV {av.__version__} has no "
                f"{scheme}:// protocol; relay the stream to RTSP, RTP or UDP MPEG-TS first",
                url=where,
            ) from err
        except av.error.ExitError as err:
            raise VideoError(
                f"{where} sent nothing within {self._timeout} s; check that the sender is "
                "running and the address and port are right",
                url=where,
            ) from err
        except av.error.FFmpegError as err:
            raise VideoError(
                f"cannot open video source {where}: {err.strerror}; check that it is a video "
                "file or stream FFmpeg can read",
                url=where,
            ) from err

    def _video_stream(self, container: InputContainer) -> VideoStream:
        if not container.streams.video:
            raise VideoError(f"{self.url} has no video stream", url=self.url)
        stream = container.streams.best("video")
        assert isinstance(stream, VideoStream)
        return stream

    # -- iteration ---------------------------------------------------------------------------
    def frames(self) -> Iterator[Frame]:
        with self._lock:
            if self._started:
                raise PreconditionError(
                    f"frames() of {self.url} was already called; open the source again"
                )
            self._started = True
        return self._run()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            if not self._running:
                self._release()

    def _release(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def _run(self) -> Iterator[Frame]:
        with self._lock:
            if self._closed.is_set():
                self._release()
                return
            self._running = True
        try:
            yield from self._loop_frames()
        finally:
            with self._lock:
                self._running = False
                self._release()

    def _loop_frames(self) -> Iterator[Frame]:
        offset = 0  # added to every pts of the current loop
        first_pts: int | None = None  # smallest pts of the file
        while True:
            container = self._container
            assert container is not None
            stream = container.streams[self._stream_index]
            assert isinstance(stream, VideoStream)
            end: int | None = None  # largest pts + duration of this loop, offset applied
            failures = [0]
            for packet, pts, dts, duration in _timed(
                self._demux(container, stream), self._nominal, self.url
            ):
                if self._closed.is_set():
                    return
                if offset == 0:
                    first_pts = pts if first_pts is None else min(first_pts, pts)
                pts += offset
                dts = None if dts is None else dts + offset
                end = pts + duration if end is None else max(end, pts + duration)
                if self._stamper.t0_ns is None:
                    self._anchor(container, pts)
                if self._encoder is None:
                    yield from self._emit(pts, dts, duration, packet.is_keyframe, bytes(packet))
                    continue
                packet.pts, packet.dts = pts, dts
                for picture in _decode(stream.codec_context, packet, self.url, failures):
                    yield from self._transcode(picture)
            if self._encoder is not None:
                for picture in _decode(stream.codec_context, None, self.url, failures):
                    yield from self._transcode(picture)
            if not self._loop or self._closed.is_set():
                break
            if end is None or first_pts is None:
                raise VideoError(f"{self.url} holds no video packet to loop", url=self.url)
            offset = end - first_pts
            container.close()
            self._container = None
            self._container = self._open()
        if self._encoder is not None:
            for out in self._encoder.encode(None):
                yield from self._emit_packet(out)

    def _anchor(self, container: InputContainer, pts: int) -> None:
        now = self._clock_ns()
        realtime_us = container.start_time_realtime if container.format.name == "rtsp" else None
        if realtime_us is not None:
            if abs(realtime_us * 1000 - now) <= MAX_REALTIME_SKEW_NS:
                self._stamper.anchor(0, realtime_us * 1000)  # pts 0 was captured then
                return
            logger.warning(
                "%s: ignoring start_time_realtime %d us, %.1f s from the session clock",
                self.url,
                realtime_us,
                (realtime_us * 1000 - now) / 1e9,
            )
        self._stamper.anchor(pts, now)

    def _demux(self, container: InputContainer, stream: VideoStream) -> Iterator[Packet]:
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.ExitError as err:  # the read timeout's interrupt
                if self._closed.is_set():
                    return
                raise VideoError(
                    f"no data from {self.url} for {self._timeout} s; the sender stopped or the "
                    "network is down: check it and open the source again",
                    url=self.url,
                ) from err
            except av.error.FFmpegError as err:
                if self._closed.is_set():
                    return
                raise VideoError(
                    f"reading {self.url} failed: {err.strerror}; the file is truncated or "
                    "corrupt, or the stream broke off",
                    url=self.url,
                ) from err
            yield packet

    def _transcode(self, picture: VideoFrame) -> Iterator[Frame]:
        assert self._encoder is not None
        if picture.pts is None:
            logger.warning("%s: dropped a decoded picture without pts", self.url)
            return
        for out in self._encoder.encode(picture):
            yield from self._emit_packet(out)

    def _emit_packet(self, out: Packet) -> Iterator[Frame]:
        assert out.pts is not None
        yield from self._emit(out.pts, out.dts, out.duration or 0, out.is_keyframe, bytes(out))

    def _emit(
        self, pts: int, dts: int | None, duration: int, keyframe: bool, data: bytes
    ) -> Iterator[Frame]:
        t_ns = self._stamper.t_ns(pts)
        if self._realtime:
            while (delay := t_ns - self._clock_ns()) > 0:
                if self._closed.wait(delay / 1e9):
                    return
        frame = Frame(
            index=self._index,
            t_ns=t_ns,
            pts=pts,
            dts=dts,
            duration=duration,
            keyframe=keyframe,
            data=data,
            intrinsics=self._intrinsics,
        )
        self._index += 1
        yield frame


def open_source(
    url: str,
    *,
    clock_ns: ClockNs,
    loop: bool = False,
    realtime: bool | None = None,
    options: dict[str, str] | None = None,
    intrinsics: Intrinsics | None = None,
    timeout_s: float = 5.0,
) -> VideoSource:
    """Open a video file, stream or capture device (blocking until its parameters are known).

    Parameters
    ----------
    url
        A file path or ``file:`` URL (MP4, MKV, MPEG-TS, raw H.264, ...); a stream URL
        (``rtsp://``, ``rtp://``, ``srt://``, ``udp://``, ``tcp://``, ``http(s)://``,
        ``rtmp://``); or a capture device ``v4l2:/dev/videoN``.
    clock_ns
        The session clock, nanoseconds; it must advance in real time (pacing waits on it).
        Read once, at the first packet, to anchor ``t_ns``.
    loop
        Replay a file forever; each loop's pts and ``t_ns`` continue after the previous
        loop's last frame (no jump back) and ``index`` keeps counting. Files only.
    realtime
        Yield each frame only once ``clock_ns()`` has reached its ``t_ns``. ``None``: True
        for files, False for streams and devices (which arrive in real time anyway).
    options
        FFmpeg demuxer/protocol options, e.g. ``{"rtsp_transport": "tcp"}``,
        ``{"rtsp_flags": "listen"}``, ``{"video_size": "1280x720"}`` for v4l2.
    intrinsics
        Static camera intrinsics attached to every frame.
    timeout_s
        Streams and devices only: how long to wait for the source to open and then for each
        packet. A stream silent this long ends :meth:`~VideoSource.frames` with
        :class:`~holo.errors.VideoError`, and :meth:`~VideoSource.close` takes effect
        within it while a read is blocked. In RTSP listen mode (``rtsp_flags=listen``) it
        sets FFmpeg's own ``listen_timeout`` and socket ``timeout`` instead, unless given.

    Raises
    ------
    holo.errors.InvalidRequestError
        A malformed ``url`` or argument.
    holo.errors.VideoError
        The source is missing, silent, not video, or in a codec FFmpeg cannot decode.
    """
    return _ContainerSource(
        url,
        clock_ns=clock_ns,
        loop=loop,
        realtime=realtime,
        options=options,
        intrinsics=intrinsics,
        timeout_s=timeout_s,
    )
