"""Measure the sync error between video and holograms, as a viewer sees them.

A :class:`SyncProbe` decodes the frames a viewer receives (PyAV), reads the frame number
burned into each picture (:mod:`holo.testing.testcard`), and records it with the hologram
pose the viewer paired with the frame. :func:`sync_errors` compares that with a script of
poses committed at known frames: for each frame, how many frames away the pose it showed
belongs (0 everywhere is exact sync). The tests and ``benchmarks/video.py`` use it.
"""

from __future__ import annotations

from holo.extras import need

need("video", "av", feature="the sync probe")

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import av

from holo.session.records import Pose
from holo.testing.testcard import read_test_card
from holo.video.frames import CodecParams, Frame

__all__ = ["SyncProbe", "sync_errors"]


class _Decoder:
    def __init__(self, params: CodecParams) -> None:
        self.ctx: Any = av.CodecContext.create(params.codec, "r")
        self.ctx.thread_count = 1  # a picture per packet, no frame-thread delay
        if params.extradata:
            self.ctx.extradata = params.extradata

    def number(self, frame: Frame) -> int | None:
        pictures = self.ctx.decode(av.Packet(frame.data))
        if not pictures:
            return None
        return read_test_card(pictures[-1].to_ndarray(format="rgb24"))


@dataclass
class SyncProbe:
    """What one viewer rendered: (frame index, number read off the picture, pose shown)."""

    rendered: list[tuple[int, int, Pose | None]] = field(default_factory=list)
    _decoder: _Decoder | None = None

    def start(self, params: CodecParams) -> None:
        """A track header (or a new one): decode from here with these parameters."""
        self._decoder = _Decoder(params)

    def read(self, frame: Frame) -> int:
        """Decode ``frame`` (every frame must be, in order) and read its burned-in number."""
        if self._decoder is None:
            raise RuntimeError("start() the probe with the track's codec parameters first")
        number = self._decoder.number(frame)
        if number is None:
            raise ValueError(f"frame {frame.index} gave no picture")
        return number

    def record(self, frame_index: int, number: int, pose: Pose | None) -> None:
        self.rendered.append((frame_index, number, pose))


def sync_errors(
    rendered: list[tuple[int, int, Pose | None]],
    commits: Mapping[int, Pose],
    *,
    frames_per_loop: int | None = None,
) -> list[int | None]:
    """The sync error in frames of every rendered frame at or after the first commit.

    ``commits`` maps a frame index to the pose committed at it. A frame shows the right
    pose when it is the one committed at the latest index at or before its own: error 0.
    Otherwise the error is that index minus the index of the commit whose pose it shows
    (> 0: the hologram is late, < 0: early; None: a pose the script never committed).
    With ``frames_per_loop``, the number read off each picture must be its index modulo
    that (a looped file): a ValueError says which not.
    """
    ordered = sorted(commits)
    errors: list[int | None] = []
    for index, number, pose in rendered:
        if frames_per_loop is not None and number != index % frames_per_loop:
            raise ValueError(
                f"frame {index}: the picture says {number}, its index {index % frames_per_loop}"
            )
        done = [i for i in ordered if i <= index]
        if not done:
            continue
        if pose == commits[done[-1]]:
            errors.append(0)
            continue
        shown = [i for i in ordered if commits[i] == pose]
        errors.append(done[-1] - shown[-1] if shown else None)
    return errors
