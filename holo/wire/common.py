"""holo.v1 common messages: vectors, poses, ids and capabilities."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from holo import __version__
from holo.errors import InvalidRequestError
from holo.session.records import Pose, Vec3
from holo.v1 import common_pb2

__all__ = [
    "FEATURES",
    "PROTOCOL_MAJOR",
    "PROTOCOL_MINOR",
    "capabilities",
    "message_dict",
    "pose_from_message",
    "pose_message",
    "vec_from_message",
    "vec_message",
]

#: The wire protocol this build speaks (holo.v1), and the session features it has.
PROTOCOL_MAJOR, PROTOCOL_MINOR = 1, 0
FEATURES = ("annotations", "control", "presence", "resync")


def vec_from_message(v: common_pb2.Vec3, what: str) -> Vec3:
    """A point or direction; a non-finite coordinate is refused, naming ``what``."""
    values = (v.x, v.y, v.z)
    if not all(math.isfinite(c) for c in values):
        raise InvalidRequestError(f"{what} has a non-finite coordinate {list(values)}")
    return values


def vec_message(values: Sequence[float]) -> common_pb2.Vec3:
    return common_pb2.Vec3(x=values[0], y=values[1], z=values[2])


def pose_from_message(pose: common_pb2.Pose, what: str = "pose") -> Pose:
    """A pose; the rotation renormalised (common.proto, ``Quat``), a zero or non-finite one
    refused."""
    q = (pose.rotation.x, pose.rotation.y, pose.rotation.z, pose.rotation.w)
    norm = math.sqrt(sum(c * c for c in q)) if all(math.isfinite(c) for c in q) else 0.0
    if not pose.HasField("rotation") or norm == 0.0 or not math.isfinite(norm):
        raise InvalidRequestError(
            f"{what}: the rotation must be a non-zero, finite quaternion (x, y, z, w); "
            "identity is (0, 0, 0, 1)"
        )
    x, y, z, w = (c / norm for c in q)
    return Pose(vec_from_message(pose.position, f"{what} position"), (x, y, z, w))


def pose_message(pose: Pose) -> common_pb2.Pose:
    x, y, z, w = pose.rotation
    return common_pb2.Pose(
        position=vec_message(pose.position), rotation=common_pb2.Quat(x=x, y=y, z=z, w=w)
    )


def capabilities(software_name: str, **limits: object) -> common_pb2.Capabilities:
    """What this build of holo (server or client) speaks, exchanged on join; ``limits`` are
    further Capabilities fields (the server's receive limit, its mesh compressions)."""
    return common_pb2.Capabilities(
        protocol_major=PROTOCOL_MAJOR,
        protocol_minor=PROTOCOL_MINOR,
        software_name=software_name,
        software_version=__version__,
        features=list(FEATURES),
        **limits,  # type: ignore[arg-type]
    )


def message_dict(message: Message) -> dict[str, Any]:
    """A message as plain JSON-able data, field names as in the .proto (for ``--json``)."""
    return MessageToDict(message, preserving_proto_field_name=True)
