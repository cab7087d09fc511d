"""Landmarks touched with a tracked pointer: the tracker as a registration input.

A :class:`LandmarkCollector` is a tracker sink (:mod:`holo.igtl.tracker`) for one tool.
The surgeon holds the pointer's tip on a landmark; :meth:`LandmarkCollector.take` returns
the tip's position in the room frame (metres) once ``samples`` consecutive samples lie
within ``max_spread_mm`` of their mean: held still, not passing by. Averaging them also
divides the tracker's jitter by the square root of their number (optical trackers jitter
~0.1-0.3 mm per sample; 10 samples take 40-170 ms at 60-250 Hz).
:func:`register_from_tracker` takes each landmark of the model in turn and sends the
session's ``Register`` intent with them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from holo.client.session import SessionClient
from holo.coords import gltf_from_ras
from holo.igtl.tracker import TrackerSample
from holo.session.records import Pose, Registration, Vec3

__all__ = ["LandmarkCollector", "register_from_tracker"]


class LandmarkCollector:
    """Takes landmarks from the tracker samples of ``device`` (None: any tool)."""

    def __init__(
        self, device: str | None = None, *, samples: int = 10, max_spread_mm: float = 1.0
    ) -> None:
        if samples < 1 or not max_spread_mm > 0:
            raise ValueError("samples must be >= 1 and max_spread_mm > 0")
        self.device = device
        self.samples = samples
        self.max_spread_mm = max_spread_mm
        self._tips: deque[npt.NDArray[np.float64]] = deque(maxlen=samples)  # RAS mm
        self._wake = asyncio.Event()

    def __call__(self, sample: TrackerSample) -> None:
        if self.device is None or sample.device_name == self.device:
            self._tips.append(np.asarray(sample.matrix_ras[:3, 3], dtype=np.float64))
            self._wake.set()

    async def take(self, timeout_s: float = 60.0) -> Vec3:
        """The next landmark: the tip held still, in the room frame (metres). Samples
        from before the call do not count. TimeoutError after ``timeout_s``."""
        self._tips.clear()

        async def held() -> npt.NDArray[np.float64]:
            while True:
                self._wake.clear()
                if len(self._tips) == self.samples:
                    tips = np.array(self._tips)
                    mean = tips.mean(axis=0)
                    if np.linalg.norm(tips - mean, axis=1).max() <= self.max_spread_mm:
                        return mean
                await self._wake.wait()

        mean = await asyncio.wait_for(held(), timeout_s)
        x, y, z = (float(c) for c in gltf_from_ras(mean))
        return (x, y, z)


async def register_from_tracker(
    session: SessionClient,
    model_id: str,
    model_points: Sequence[Vec3],
    collector: LandmarkCollector,
    *,
    before_each: Callable[[int], object] | None = None,
    timeout_s: float = 60.0,
    targets: Sequence[Vec3] = (),
    fle_mm: float = 0.0,
    apply_flagged: bool = False,
) -> tuple[int, Registration, Pose]:
    """Take each of ``model_points`` (the model's landmarks, its frame, metres) with the
    tracked pointer, in order, and register the model with them (``session`` must be in
    control). ``before_each(k)`` is called before landmark ``k`` is taken (tell the
    surgeon which to touch); ``targets``, ``fle_mm`` and ``apply_flagged`` are
    :meth:`SessionClient.register`'s."""
    touched: list[Vec3] = []
    for k in range(len(model_points)):
        if before_each is not None:
            before_each(k)
        touched.append(await collector.take(timeout_s))
    return await session.register(
        model_id,
        model_points,
        touched,
        targets=targets,
        fle_mm=fle_mm,
        apply_flagged=apply_flagged,
    )
