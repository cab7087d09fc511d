"""Conversions between holo.v1 session messages and the transport-neutral records of
:mod:`holo.session` (dicts and :class:`~holo.session.state.Event`).

The server and the client SDK both use these, so a client folds exactly what the server
folds. Geometry is checked here, at the edge: non-finite numbers and zero quaternions are
INVALID_ARGUMENT, quaternions are renormalised (common.proto, ``Quat``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from holo.errors import InvalidRequestError
from holo.session.state import Event, SessionState
from holo.v1 import common_pb2, session_pb2

__all__ = [
    "ROLE_NAMES",
    "annotation_from_message",
    "annotation_message",
    "ephemeral_from_message",
    "ephemeral_message",
    "event_from_message",
    "event_message",
    "pose_from_message",
    "pose_message",
    "snapshot_message",
    "state_from_snapshot",
    "telestration_from_message",
    "telestration_message",
    "vec_message",
]

ROLE_NAMES = {
    session_pb2.ROLE_PRESENTER: "presenter",
    session_pb2.ROLE_EXPERT: "expert",
    session_pb2.ROLE_OBSERVER: "observer",
    session_pb2.ROLE_RADIOLOGIST: "radiologist",
}
_ROLES = {name: value for value, name in ROLE_NAMES.items()}
MAX_STROKE_POINTS = 10_000
MAX_LABEL_CHARS = 500


def _vec(v: common_pb2.Vec3, what: str) -> list[float]:
    values = [v.x, v.y, v.z]
    if not all(math.isfinite(c) for c in values):
        raise InvalidRequestError(f"{what} has a non-finite coordinate {values}")
    return values


def vec_message(values: Sequence[float]) -> common_pb2.Vec3:
    return common_pb2.Vec3(x=values[0], y=values[1], z=values[2])


def pose_from_message(pose: common_pb2.Pose, what: str = "pose") -> dict[str, Any]:
    """A pose record; the rotation renormalised, a zero or non-finite one refused."""
    q = [pose.rotation.x, pose.rotation.y, pose.rotation.z, pose.rotation.w]
    norm = math.sqrt(sum(c * c for c in q)) if all(math.isfinite(c) for c in q) else 0.0
    if not pose.HasField("rotation") or norm == 0.0 or not math.isfinite(norm):
        raise InvalidRequestError(
            f"{what}: the rotation must be a non-zero, finite quaternion (x, y, z, w); "
            "identity is (0, 0, 0, 1)"
        )
    return {"position": _vec(pose.position, f"{what} position"), "rotation": [c / norm for c in q]}


IDENTITY_POSE = {"position": [0.0, 0.0, 0.0], "rotation": [0.0, 0.0, 0.0, 1.0]}


def pose_message(pose: dict[str, Any]) -> common_pb2.Pose:
    x, y, z, w = pose["rotation"]
    return common_pb2.Pose(
        position=vec_message(pose["position"]), rotation=common_pb2.Quat(x=x, y=y, z=z, w=w)
    )


def _participant_message(p: dict[str, Any]) -> session_pb2.Participant:
    return session_pb2.Participant(
        participant_id=common_pb2.ParticipantId(value=p["participant_id"]),
        role=_ROLES.get(p["role"], session_pb2.ROLE_UNSPECIFIED),
        display_name=p["display_name"],
        present=p["present"],
    )


def _participant_from_message(p: session_pb2.Participant) -> dict[str, Any]:
    return {
        "participant_id": p.participant_id.value,
        "role": ROLE_NAMES.get(p.role, ""),
        "display_name": p.display_name,
        "subject": "",  # never on the wire
        "present": p.present,
    }


def annotation_from_message(a: session_pb2.Annotation, author: str) -> dict[str, Any]:
    """An annotation record from a client's message; ``author`` is the sender."""
    shape = a.WhichOneof("shape")
    if not a.annotation_id or len(a.annotation_id) > 128:
        raise InvalidRequestError("an annotation needs an annotation_id of 1 to 128 characters")
    if shape == "marker":
        points, text = [_vec(a.marker.position, "marker")], ""
    elif shape == "stroke":
        if not 2 <= len(a.stroke.points) <= MAX_STROKE_POINTS:
            raise InvalidRequestError(
                f"a stroke has 2 to {MAX_STROKE_POINTS} points, not {len(a.stroke.points)}"
            )
        points, text = [_vec(p, "stroke point") for p in a.stroke.points], ""
    elif shape == "label":
        if not 1 <= len(a.label.text) <= MAX_LABEL_CHARS:
            raise InvalidRequestError(f"a text label has 1 to {MAX_LABEL_CHARS} characters")
        points, text = [_vec(a.label.position, "label")], a.label.text
    else:
        raise InvalidRequestError("an annotation is a marker, a stroke or a text label; none set")
    return {
        "annotation_id": a.annotation_id,
        "model_id": a.model_id.value,
        "author": author,
        "shape": shape,
        "points": points,
        "text": text,
    }


def annotation_message(a: dict[str, Any]) -> session_pb2.Annotation:
    message = session_pb2.Annotation(
        annotation_id=a["annotation_id"],
        model_id=common_pb2.ModelId(value=a["model_id"]),
        author=common_pb2.ParticipantId(value=a["author"]),
    )
    if a["shape"] == "marker":
        message.marker.position.CopyFrom(vec_message(a["points"][0]))
    elif a["shape"] == "stroke":
        message.stroke.points.extend(vec_message(p) for p in a["points"])
    else:
        message.label.position.CopyFrom(vec_message(a["points"][0]))
        message.label.text = a["text"]
    return message


def telestration_from_message(t: session_pb2.Telestration, author: str) -> dict[str, Any]:
    """A telestration record from a client's message; ``author`` is the sender."""
    if not t.telestration_id or len(t.telestration_id) > 128:
        raise InvalidRequestError("a telestration needs a telestration_id of 1 to 128 characters")
    if not t.track_id:
        raise InvalidRequestError("a telestration names the video track it is drawn on")
    if t.frame_t_ns <= 0:
        raise InvalidRequestError("a telestration gives frame_t_ns, the session time of its frame")
    if not 2 <= len(t.points) <= MAX_STROKE_POINTS:
        raise InvalidRequestError(
            f"a telestration has 2 to {MAX_STROKE_POINTS} points, not {len(t.points)}"
        )
    points = [[p.x, p.y] for p in t.points]
    if not all(math.isfinite(c) and 0.0 <= c <= 1.0 for p in points for c in p):
        raise InvalidRequestError(
            "telestration points are normalised image coordinates, each in [0, 1]"
        )
    if t.rgb > 0xFFFFFF:
        raise InvalidRequestError("a telestration's rgb is 0xRRGGBB")
    return {
        "telestration_id": t.telestration_id,
        "track_id": t.track_id,
        "frame_t_ns": t.frame_t_ns,
        "author": author,
        "points": points,
        "rgb": t.rgb,
    }


def telestration_message(t: dict[str, Any]) -> session_pb2.Telestration:
    return session_pb2.Telestration(
        telestration_id=t["telestration_id"],
        track_id=t["track_id"],
        frame_t_ns=t["frame_t_ns"],
        author=common_pb2.ParticipantId(value=t["author"]),
        points=[session_pb2.Vec2(x=u, y=v) for u, v in t["points"]],
        rgb=t["rgb"],
    )


def _scene_model(model_id: str, pose: dict[str, Any]) -> session_pb2.SceneModel:
    return session_pb2.SceneModel(
        model_id=common_pb2.ModelId(value=model_id), anchor_pose=pose_message(pose)
    )


#: Event kinds whose payload is one participant id.
_PARTICIPANT_KINDS = frozenset(
    {"left", "away", "back", "control_requested", "control_granted", "control_revoked"}
)


def event_message(e: Event) -> session_pb2.SessionEvent:
    m = session_pb2.SessionEvent(
        seq=e.seq, t_ns=e.t_ns, actor=common_pb2.ParticipantId(value=e.actor)
    )
    d = e.data
    if e.kind == "joined":
        m.joined.CopyFrom(_participant_message(d["participant"]))
    elif e.kind in _PARTICIPANT_KINDS:
        getattr(m, e.kind).value = d["participant_id"]
    elif e.kind in ("model_loaded", "anchor_committed"):
        getattr(m, e.kind).CopyFrom(_scene_model(d["model_id"], d["anchor_pose"]))
    elif e.kind == "annotation_added":
        m.annotation_added.CopyFrom(annotation_message(d["annotation"]))
    elif e.kind == "annotation_removed":
        m.annotation_removed = d["annotation_id"]
    elif e.kind == "telestration_added":
        m.telestration_added.CopyFrom(telestration_message(d["telestration"]))
    return m


def event_from_message(m: session_pb2.SessionEvent) -> Event:
    kind = m.WhichOneof("kind") or ""
    data: dict[str, Any]
    if kind == "joined":
        data = {"participant": _participant_from_message(m.joined)}
    elif kind in _PARTICIPANT_KINDS:
        data = {"participant_id": getattr(m, kind).value}
    elif kind in ("model_loaded", "anchor_committed"):
        scene = getattr(m, kind)
        data = {
            "model_id": scene.model_id.value,
            "anchor_pose": pose_from_message(scene.anchor_pose),
        }
    elif kind == "annotation_added":
        data = {
            "annotation": annotation_from_message(
                m.annotation_added, m.annotation_added.author.value
            )
        }
    elif kind == "annotation_removed":
        data = {"annotation_id": m.annotation_removed}
    elif kind == "telestration_added":
        t = m.telestration_added
        data = {"telestration": telestration_from_message(t, t.author.value)}
    else:
        data = {}
    return Event(m.seq, m.t_ns, m.actor.value, kind, data)


def snapshot_message(state: SessionState, t_ns: int = 0) -> session_pb2.SessionSnapshot:
    """The state as a snapshot taken at session time ``t_ns``."""
    return session_pb2.SessionSnapshot(
        seq=state.seq,
        t_ns=t_ns,
        participants=[_participant_message(p) for p in state.participants.values()],
        models=[_scene_model(mid, m["anchor_pose"]) for mid, m in state.models.items()],
        annotations=[annotation_message(a) for a in state.annotations.values()],
        controller=common_pb2.ParticipantId(value=state.controller),
        control_requests=[common_pb2.ParticipantId(value=p) for p in state.control_requests],
        telestrations=[telestration_message(t) for t in state.telestrations.values()],
    )


def state_from_snapshot(m: session_pb2.SessionSnapshot) -> SessionState:
    """A client's state from a snapshot (subjects are not on the wire: left empty)."""
    state = SessionState(seq=m.seq, controller=m.controller.value)
    for p in m.participants:
        state.participants[p.participant_id.value] = _participant_from_message(p)
    for scene in m.models:
        state.models[scene.model_id.value] = {"anchor_pose": pose_from_message(scene.anchor_pose)}
    for a in m.annotations:
        state.annotations[a.annotation_id] = annotation_from_message(a, a.author.value)
    state.control_requests = [p.value for p in m.control_requests]
    for t in m.telestrations:
        state.telestrations[t.telestration_id] = telestration_from_message(t, t.author.value)
    return state


def ephemeral_message(update: dict[str, Any]) -> session_pb2.EphemeralUpdate:
    m = session_pb2.EphemeralUpdate(
        participant_id=common_pb2.ParticipantId(value=update["participant_id"]),
        t_ns=update["t_ns"],
    )
    value = update["value"]
    if update["channel"] == "head_pose":
        m.head_pose.CopyFrom(pose_message(value["head_pose"]))
    elif update["channel"] == "pointer":
        m.pointer.origin.CopyFrom(vec_message(value["origin"]))
        m.pointer.direction.CopyFrom(vec_message(value["direction"]))
    elif update["channel"] == "drag":
        m.drag.CopyFrom(_scene_model(value["model_id"], value["anchor_pose"]))
    return m


def ephemeral_from_message(m: session_pb2.EphemeralUpdate) -> dict[str, Any]:
    channel = m.WhichOneof("value") or ""
    value: dict[str, Any] = {}
    if channel == "head_pose":
        value = {"head_pose": pose_from_message(m.head_pose)}
    elif channel == "pointer":
        value = {
            "origin": _vec(m.pointer.origin, "ray"),
            "direction": _vec(m.pointer.direction, "ray"),
        }
    elif channel == "drag":
        value = {
            "model_id": m.drag.model_id.value,
            "anchor_pose": pose_from_message(m.drag.anchor_pose),
        }
    return {
        "participant_id": m.participant_id.value,
        "channel": channel,
        "t_ns": m.t_ns,
        "value": value,
    }
