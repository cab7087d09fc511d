"""Pushed video that fills a disk fast: H.264 access units of 320x240 frames, random
noise below a test card, encoded nearly losslessly (crf 8): about 60 kB a frame, so a
few seconds of it are megabytes. For the tests of a recording that meets a full disk."""

from __future__ import annotations

from fractions import Fraction

from holo.video.frames import CodecParams, PushedUnit

__all__ = ["PUSHED", "noisy_units"]

PUSHED = CodecParams("h264", 320, 240, b"", Fraction(1, 30), Fraction(30))


def noisy_units(count: int, seed: int = 3) -> list[PushedUnit]:
    """The access units of ``count`` frames at 30 fps, in decode order (no B-frames)."""
    import av
    import numpy as np

    from holo.testing.testcard import make_test_card

    rng = np.random.default_rng(seed)
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = 320, 240, "yuv420p"
    codec.time_base = Fraction(1, 30)
    codec.options = {"g": "30", "bf": "0", "crf": "8", "preset": "ultrafast"}
    units = []
    for i in range(count):
        rgb = make_test_card(i, 320, 240)
        rgb[60:] = rng.integers(0, 256, (180, 320, 3), np.uint8)
        picture = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        picture.pts = i
        units += [PushedUnit(bytes(p), int(p.pts), p.is_keyframe) for p in codec.encode(picture)]
    return units
