"""holo.v1 session messages <-> the records of :mod:`holo.session`.

The server and the client SDK both use these, so a client folds exactly what the server
folds. Geometry and shape are checked here, at the edge: non-finite numbers and zero
quaternions are INVALID_ARGUMENT, quaternions are renormalised (common.proto, ``Quat``), a
stroke has two points or more. How long ids, labels and strokes may be is the session
state's to say (:mod:`holo.session.limits`, configurable), not the wire's: a client decodes
whatever the server it talks to accepted. :func:`worst_snapshot_bytes` is what those bounds
allow a snapshot to weigh on the wire.
"""

from __future__ import annotations

import math

from holo.errors import InvalidRequestError
from holo.session.fanout import Resync
from holo.session.limits import SessionLimits
from holo.session.records import (
    Annotation,
    EphemeralUpdate,
    EphemeralValue,
    Participant,
    Pose,
    Ray,
    Registration,
    SceneModel,
    SessionInfo,
    Telestration,
    Vec3,
)
from holo.session.state import PARTICIPANT_KINDS, Event, EventData, SessionState
from holo.v1 import common_pb2, session_pb2
from holo.wire.common import pose_from_message, pose_message, vec_from_message, vec_message

__all__ = [
    "ROLE_NAMES",
    "accepted_message",
    "annotation_from_message",
    "annotation_message",
    "ephemeral_from_message",
    "ephemeral_message",
    "ephemerals_message",
    "event_from_message",
    "event_message",
    "info_from_message",
    "info_message",
    "ray_from_message",
    "ray_message",
    "registration_from_message",
    "registration_message",
    "resync_message",
    "snapshot_message",
    "state_from_snapshot",
    "telestration_from_message",
    "telestration_message",
    "worst_event_bytes",
    "worst_snapshot_bytes",
]

ROLE_NAMES = {
    session_pb2.ROLE_PRESENTER: "presenter",
    session_pb2.ROLE_EXPERT: "expert",
    session_pb2.ROLE_OBSERVER: "observer",
    session_pb2.ROLE_RADIOLOGIST: "radiologist",
}
_ROLES = {name: value for value, name in ROLE_NAMES.items()}


def info_message(info: SessionInfo) -> session_pb2.SessionInfo:
    return session_pb2.SessionInfo(
        session_id=common_pb2.SessionId(value=info.session_id),
        case_id=info.case_id,
        created_t_ns=info.created_t_ns,
    )


def info_from_message(m: session_pb2.SessionInfo) -> SessionInfo:
    return SessionInfo(m.session_id.value, m.case_id, m.created_t_ns)


def _participant_message(p: Participant) -> session_pb2.Participant:
    return session_pb2.Participant(  # the token subject is never on the wire
        participant_id=common_pb2.ParticipantId(value=p.participant_id),
        role=_ROLES.get(p.role, session_pb2.ROLE_UNSPECIFIED),
        display_name=p.display_name,
        present=p.present,
    )


def _participant_from_message(p: session_pb2.Participant) -> Participant:
    return Participant(
        p.participant_id.value, ROLE_NAMES.get(p.role, ""), p.display_name, "", p.present
    )


def _check_id(value: str, what: str) -> str:
    if not value:
        raise InvalidRequestError(f"a {what} is needed")
    return value


def annotation_from_message(a: session_pb2.Annotation, author: str) -> Annotation:
    """An annotation from a client's message; ``author`` is the sender."""
    _check_id(a.annotation_id, "annotation_id")
    shape = a.WhichOneof("shape")
    text = ""
    points: tuple[Vec3, ...]
    if shape == "marker":
        points = (vec_from_message(a.marker.position, "marker"),)
    elif shape == "stroke":
        if len(a.stroke.points) < 2:
            raise InvalidRequestError(f"a stroke has 2 points or more, not {len(a.stroke.points)}")
        points = tuple(vec_from_message(p, "stroke point") for p in a.stroke.points)
    elif shape == "label":
        if not a.label.text:
            raise InvalidRequestError("a text label has a text")
        points, text = (vec_from_message(a.label.position, "label"),), a.label.text
    else:
        raise InvalidRequestError("an annotation is a marker, a stroke or a text label; none set")
    return Annotation(a.annotation_id, a.model_id.value, author, shape, points, text)


def annotation_message(a: Annotation) -> session_pb2.Annotation:
    message = session_pb2.Annotation(
        annotation_id=a.annotation_id,
        model_id=common_pb2.ModelId(value=a.model_id),
        author=common_pb2.ParticipantId(value=a.author),
    )
    if a.shape == "marker":
        message.marker.position.CopyFrom(vec_message(a.points[0]))
    elif a.shape == "stroke":
        message.stroke.points.extend(vec_message(p) for p in a.points)
    else:
        message.label.position.CopyFrom(vec_message(a.points[0]))
        message.label.text = a.text
    return message


def telestration_from_message(t: session_pb2.Telestration, author: str) -> Telestration:
    """A telestration from a client's message; ``author`` is the sender."""
    _check_id(t.telestration_id, "telestration_id")
    if not t.track_id:
        raise InvalidRequestError("a telestration names the video track it is drawn on")
    if t.frame_t_ns <= 0:
        raise InvalidRequestError("a telestration gives frame_t_ns, the session time of its frame")
    if len(t.points) < 2:
        raise InvalidRequestError(f"a telestration has 2 points or more, not {len(t.points)}")
    points = tuple((p.x, p.y) for p in t.points)
    if not all(math.isfinite(c) and 0.0 <= c <= 1.0 for p in points for c in p):
        raise InvalidRequestError(
            "telestration points are normalised image coordinates, each in [0, 1]"
        )
    if t.rgb > 0xFFFFFF:
        raise InvalidRequestError("a telestration's rgb is 0xRRGGBB")
    return Telestration(t.telestration_id, t.track_id, t.frame_t_ns, author, points, t.rgb)


def telestration_message(t: Telestration) -> session_pb2.Telestration:
    return session_pb2.Telestration(
        telestration_id=t.telestration_id,
        track_id=t.track_id,
        frame_t_ns=t.frame_t_ns,
        author=common_pb2.ParticipantId(value=t.author),
        points=[session_pb2.Vec2(x=u, y=v) for u, v in t.points],
        rgb=t.rgb,
    )


def ray_from_message(ray: session_pb2.Ray) -> Ray:
    """A pointer ray: a finite origin and a finite, non-zero direction."""
    origin = vec_from_message(ray.origin, "pointer ray origin")
    direction = vec_from_message(ray.direction, "pointer ray direction")
    if not any(direction):
        raise InvalidRequestError("a pointer ray needs a finite origin and a non-zero direction")
    return Ray(origin, direction)


def ray_message(ray: Ray) -> session_pb2.Ray:
    return session_pb2.Ray(origin=vec_message(ray.origin), direction=vec_message(ray.direction))


def _scene_message(model: SceneModel) -> session_pb2.SceneModel:
    m = session_pb2.SceneModel(
        model_id=common_pb2.ModelId(value=model.model_id),
        anchor_pose=pose_message(model.anchor_pose),
    )
    if model.registration is not None:
        m.registration.CopyFrom(registration_message(model.registration))
    return m


def _scene_from_message(m: session_pb2.SceneModel) -> SceneModel:
    registration = registration_from_message(m.registration) if m.HasField("registration") else None
    return SceneModel(m.model_id.value, pose_from_message(m.anchor_pose), registration=registration)


def registration_message(r: Registration) -> session_pb2.Registration:
    return session_pb2.Registration(
        fiducial_errors_mm=r.fiducial_errors_mm,
        fre_rms_mm=r.fre_rms_mm,
        fle_mm=r.fle_mm,
        fle_estimated=r.fle_estimated,
        expected_tre_mm=r.expected_tre_mm,
        tre95_mm=r.tre95_mm,
        surface_rms_mm=r.surface_rms_mm,
        surface_points_used=r.surface_points_used,
        surface_points_rejected=r.surface_points_rejected,
        accepted=r.accepted,
        reasons=r.reasons,
    )


def registration_from_message(m: session_pb2.Registration) -> Registration:
    return Registration(
        tuple(m.fiducial_errors_mm),
        m.fre_rms_mm,
        m.fle_mm,
        m.fle_estimated,
        tuple(m.expected_tre_mm),
        tuple(m.tre95_mm),
        m.surface_rms_mm,
        m.surface_points_used,
        m.surface_points_rejected,
        m.accepted,
        tuple(m.reasons),
    )


def event_message(e: Event) -> session_pb2.SessionEvent:
    m = session_pb2.SessionEvent(
        seq=e.seq, t_ns=e.t_ns, actor=common_pb2.ParticipantId(value=e.actor)
    )
    d = e.data
    if isinstance(d, Participant):
        m.joined.CopyFrom(_participant_message(d))
    elif isinstance(d, SceneModel):
        getattr(m, e.kind).CopyFrom(_scene_message(d))
    elif isinstance(d, Annotation):
        m.annotation_added.CopyFrom(annotation_message(d))
    elif isinstance(d, Telestration):
        m.telestration_added.CopyFrom(telestration_message(d))
    elif e.kind == "annotation_removed":
        m.annotation_removed = d
    elif e.kind in PARTICIPANT_KINDS:
        getattr(m, e.kind).value = d
    return m


def event_from_message(m: session_pb2.SessionEvent) -> Event:
    """An event as a client receives it (``intent_id`` stays on the server)."""
    kind = m.WhichOneof("kind") or ""
    data: EventData
    if kind == "joined":
        data = _participant_from_message(m.joined)
    elif kind in PARTICIPANT_KINDS:
        data = getattr(m, kind).value
    elif kind in ("model_loaded", "anchor_committed"):
        data = _scene_from_message(getattr(m, kind))
    elif kind == "annotation_added":
        data = annotation_from_message(m.annotation_added, m.annotation_added.author.value)
    elif kind == "annotation_removed":
        data = m.annotation_removed
    elif kind == "telestration_added":
        t = m.telestration_added
        data = telestration_from_message(t, t.author.value)
    else:
        raise InvalidRequestError(
            f"event seq {m.seq} is of a kind this client does not know; update the client"
        )
    return Event(m.seq, m.t_ns, m.actor.value, kind, data)


def snapshot_message(state: SessionState, t_ns: int) -> session_pb2.SessionSnapshot:
    """The state as a snapshot taken at session time ``t_ns``."""
    return session_pb2.SessionSnapshot(
        seq=state.seq,
        t_ns=t_ns,
        participants=[_participant_message(p) for p in state.participants.values()],
        models=[_scene_message(m) for m in state.models.values()],
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
        state.models[scene.model_id.value] = _scene_from_message(scene)
    for a in m.annotations:
        state.annotations[a.annotation_id] = annotation_from_message(a, a.author.value)
    state.control_requests = [p.value for p in m.control_requests]
    for t in m.telestrations:
        state.telestrations[t.telestration_id] = telestration_from_message(t, t.author.value)
    return state


def ephemeral_message(update: EphemeralUpdate) -> session_pb2.EphemeralUpdate:
    m = session_pb2.EphemeralUpdate(
        participant_id=common_pb2.ParticipantId(value=update.participant_id),
        t_ns=update.t_ns,
    )
    value = update.value
    if isinstance(value, Pose):
        m.head_pose.CopyFrom(pose_message(value))
    elif isinstance(value, Ray):
        m.pointer.CopyFrom(ray_message(value))
    elif isinstance(value, SceneModel):
        m.drag.CopyFrom(_scene_message(value))
    return m


def ephemeral_from_message(m: session_pb2.EphemeralUpdate) -> EphemeralUpdate:
    channel = m.WhichOneof("value") or ""
    value: EphemeralValue = None
    if channel == "head_pose":
        value = pose_from_message(m.head_pose, "head pose")
    elif channel == "pointer":
        value = ray_from_message(m.pointer)
    elif channel == "drag":
        value = _scene_from_message(m.drag)
    return EphemeralUpdate(m.participant_id.value, channel, m.t_ns, value)


def ephemerals_message(updates: list[EphemeralUpdate]) -> session_pb2.SessionMessage:
    """One ephemeral frame as a stream message (a batch when it holds several values)."""
    if len(updates) == 1:
        return session_pb2.SessionMessage(ephemeral=ephemeral_message(updates[0]))
    batch = session_pb2.EphemeralBatch(updates=[ephemeral_message(u) for u in updates])
    return session_pb2.SessionMessage(ephemerals=batch)


def resync_message(resync: Resync) -> session_pb2.SessionMessage:
    snapshot = snapshot_message(resync.state, resync.t_ns)
    return session_pb2.SessionMessage(
        resync=session_pb2.Resync(snapshot=snapshot, reason=resync.reason)
    )


def accepted_message(
    participant_id: str,
    info: SessionInfo,
    capabilities: common_pb2.Capabilities,
    heartbeat_interval_s: float,
    snapshot: SessionState | None,
    t_ns: int,
) -> session_pb2.SessionMessage:
    """The first message of a Join stream: who the caller is in the session, what the
    server speaks, and the state to start from (none when resuming), as of ``t_ns``."""
    accepted = session_pb2.JoinAccepted(
        participant_id=common_pb2.ParticipantId(value=participant_id),
        capabilities=capabilities,
        session=info_message(info),
        heartbeat_interval_ms=round(heartbeat_interval_s * 1000),
    )
    if snapshot is not None:
        accepted.snapshot.CopyFrom(snapshot_message(snapshot, t_ns))
    return session_pb2.SessionMessage(accepted=accepted)


# The worst case of each field on the wire: an id at its longest (ids are ASCII), text of
# 4-byte UTF-8 characters (U+1F9E0), numbers that are never zero (proto3 leaves zeros out).
_WIDE_CHAR = "\U0001f9e0"
_X = 0.123456789
_MAX_INT64 = (1 << 63) - 1
_FRAMING = 6  # a field's tag (1 byte) and length (up to 5 bytes) around each item
_POINT_BYTES = 29  # a 3-D point of a stroke: tag, length, three doubles of 9 bytes each


def worst_snapshot_bytes(limits: SessionLimits) -> int:
    """The most a :class:`holo.v1.session_pb2.SessionSnapshot` of a state within ``limits``
    can weigh on the wire: each collection full of its largest item, every point of
    ``max_points`` at its largest (a 3-D point, 29 bytes; a telestration's 2-D point is
    20), each item with its framing. An upper bound: the label's own point is counted
    twice, and an annotation's text and a stroke's points both."""
    ident = "a" * limits.max_id_chars
    vec = (_X, _X, _X)
    name = _WIDE_CHAR * limits.max_display_name_chars
    participant = _participant_message(Participant(ident, "observer", name, "", True))
    model = _scene_message(SceneModel(ident, Pose(vec, (_X, _X, _X, _X))))
    text = _WIDE_CHAR * limits.max_label_chars
    label = annotation_message(Annotation(ident, ident, ident, "label", (vec,), text))
    telestration = telestration_message(Telestration(ident, ident, _MAX_INT64, ident, (), 1))
    participant_id = common_pb2.ParticipantId(value=ident)
    header = session_pb2.SessionSnapshot(
        seq=_MAX_INT64, t_ns=_MAX_INT64, controller=participant_id
    ).ByteSize()
    items = (
        (participant.ByteSize(), limits.max_participants),
        (participant_id.ByteSize(), limits.max_participants),  # control requests
        (model.ByteSize(), limits.max_models),
        # A stroke's framing (its tag and length) on top of a label's fields and text.
        (label.ByteSize() + _FRAMING, limits.max_annotations),
        (telestration.ByteSize(), limits.max_telestrations),
    )
    body = sum((size + _FRAMING) * count for size, count in items)
    return header + body + limits.max_points * _POINT_BYTES


def worst_event_bytes(limits: SessionLimits) -> int:
    """The most one event of a state within ``limits`` weighs as a stream message: a stroke
    of ``max_stroke_points`` 3-D points with a label's worth of fields."""
    ident = "a" * limits.max_id_chars
    text = _WIDE_CHAR * limits.max_label_chars
    label = annotation_message(Annotation(ident, ident, ident, "label", ((_X, _X, _X),), text))
    event = session_pb2.SessionEvent(
        seq=_MAX_INT64, t_ns=_MAX_INT64, actor=common_pb2.ParticipantId(value=ident)
    )
    event.annotation_added.CopyFrom(label)
    points = limits.max_stroke_points * _POINT_BYTES
    return event.ByteSize() + 3 * _FRAMING + points
