"""Tracker samples: the hook where a tracked tool's pose enters a session.

The gateway (:mod:`holo.igtl.gateway`) turns every TRANSFORM or POSITION a peer sends
into a :class:`TrackerSample` and hands it to each *tracker sink*: a plain callable, called
on the event loop, that must not block. :class:`PointerForwarder`, installed by default,
makes the newest sample the gateway participant's pointer (the ``pointer`` ephemeral
channel). A registration step (landmarks touched with a tracked pointer) is wired as one
more sink that keeps the samples of its tool, e.g. in a bounded ``asyncio.Queue``::

    samples: asyncio.Queue[TrackerSample] = asyncio.Queue(maxsize=256)

    def keep(sample: TrackerSample) -> None:
        if sample.device_name == "StylusTip":
            samples.put_nowait(sample)  # QueueFull on overflow: logged once by the gateway

    gateway.add_tracker_sink(keep)

and reads ``sample.pose.position`` (the tool tip in the room frame, metres) or
``sample.matrix_ras`` (as the tracker sent it, RAS mm) when a point is to be taken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from holo.client.channel import ClientError
from holo.client.session import SessionClient
from holo.coords import GLTF_FROM_RAS, gltf_from_ras, gltf_transform_from_ras, pose_from_matrix
from holo.session.records import Pose, Ray

__all__ = ["PointerForwarder", "TrackerSample", "TrackerSink", "tracker_sample"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackerSample:
    """One tracker pose received from a peer.

    Attributes
    ----------
    device_name
        The OpenIGTLink device name (the tool), as the peer sent it; may be anything, so
        never log it.
    message_type
        ``"TRANSFORM"`` or ``"POSITION"``.
    matrix_ras
        Shape ``(4, 4)``: tool -> the peer's world, RAS millimetres, as received.
    pose
        The same transform in the room frame (glTF convention, metres): ``position`` is
        the tool's origin (its tip, for a calibrated pointer) in the room.
    received_ns
        ``time.monotonic_ns()`` when the gateway read it.
    """

    device_name: str
    message_type: str
    matrix_ras: npt.NDArray[np.float64]
    pose: Pose
    received_ns: int

    def ray(self, axis: tuple[float, float, float]) -> Ray:
        """The tool as a pointer ray in the room frame: from its origin along ``axis``
        (a direction in the tool's own frame)."""
        origin = gltf_from_ras(self.matrix_ras[:3, 3])
        along = GLTF_FROM_RAS[:3, :3] @ (self.matrix_ras[:3, :3] @ np.asarray(axis, float))
        length = float(np.linalg.norm(along))
        if length < 1e-12:  # a degenerate rotation block: point "forward" in the room
            direction = (0.0, 0.0, -1.0)
        else:
            x, y, z = (float(c) for c in along / length)
            direction = (x, y, z)
        ox, oy, oz = (float(c) for c in origin)
        return Ray((ox, oy, oz), direction)


TrackerSink = Callable[[TrackerSample], object]


def tracker_sample(
    device_name: str, message_type: str, matrix: npt.NDArray[np.float64]
) -> TrackerSample:
    """A :class:`TrackerSample` of a received 4x4 (RAS mm)."""
    position, rotation = pose_from_matrix(gltf_transform_from_ras(matrix))
    px, py, pz = (float(c) for c in position)
    qx, qy, qz, qw = (float(c) for c in rotation)
    pose = Pose((px, py, pz), (qx, qy, qz, qw))
    return TrackerSample(device_name, message_type, matrix, pose, time.monotonic_ns())


class PointerForwarder:
    """The default tracker sink: the newest sample becomes the participant's pointer.

    One ``UpdatePointer`` call is in flight at a time; samples that arrive meanwhile
    replace each other, so a 250 Hz tracker costs the session what the link can carry and
    the pointer is never behind by a queue. ``device`` (None: any) chooses the tool;
    ``axis`` is the pointing direction in the tool's frame (default -z: the way a WebXR
    controller's target ray points, so tools and headsets point alike).
    """

    def __init__(
        self,
        session: SessionClient,
        *,
        device: str | None = None,
        axis: tuple[float, float, float] = (0.0, 0.0, -1.0),
    ) -> None:
        self.session = session
        self.device = device
        self.axis = axis
        self.sent = 0
        self._latest: TrackerSample | None = None
        self._wake = asyncio.Event()
        self._refused = False

    def __call__(self, sample: TrackerSample) -> None:
        if self.device is None or sample.device_name == self.device:
            self._latest = sample
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            sample, self._latest = self._latest, None
            if sample is None:
                continue
            try:
                await self.session.pointer(sample.ray(self.axis))
                self.sent += 1
            except ClientError as err:
                if not self._refused:  # e.g. an observer's token: it may not point
                    logger.warning("tracker poses cannot become the pointer: %s", err.message)
                    self._refused = True
