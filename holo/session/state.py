"""A session's state as the fold of its durable events, and the rules intents must meet.

Transport-neutral (no grpc, no generated code): events are :class:`Event` records with a
``kind`` and a JSON-able ``data`` payload; :func:`apply` folds one into a
:class:`SessionState`. The fold is deterministic and total over valid logs, so every node
and every client that applies the same events in the same order holds the same state
(the property test checks this against clients' own folds).

Geometry in ``data`` follows the wire: poses are ``{"position": [x, y, z],
"rotation": [x, y, z, w]}`` (glTF convention, metres, model frame -> room frame); annotation
points are in the model frame of the model they are anchored to.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from holo.errors import InvalidRequestError, PermissionDeniedError, SessionError

__all__ = [
    "DURABLE_KINDS",
    "Event",
    "SessionState",
    "apply",
    "check_intent",
]

#: Durable event kinds and what their ``data`` holds.
DURABLE_KINDS = {
    "joined": "participant: {participant_id, role, display_name, subject, present}",
    "left": "participant_id",
    "away": "participant_id",
    "back": "participant_id",
    "model_loaded": "model_id, anchor_pose",
    "anchor_committed": "model_id, anchor_pose",
    "annotation_added": "annotation: {annotation_id, model_id, author, shape, points, text}",
    "annotation_removed": "annotation_id (an annotation's or a telestration's)",
    "telestration_added": "telestration: {telestration_id, track_id, frame_t_ns, author, "
    "points: [[u, v], ...] normalised image coordinates, rgb}",
    "control_requested": "participant_id",
    "control_granted": "participant_id",
    "control_revoked": "participant_id (who loses it); control returns to a presenter",
}


@dataclass
class Event:
    """One durable event: ``seq`` (gap-free from 1), session-clock ``t_ns``, the actor."""

    seq: int
    t_ns: int
    actor: str
    kind: str
    data: dict[str, Any]

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @staticmethod
    def decode(payload: bytes) -> Event:
        raw = json.loads(payload)
        return Event(raw["seq"], raw["t_ns"], raw["actor"], raw["kind"], raw["data"])


@dataclass
class SessionState:
    """The state at ``seq``. Dicts keep insertion order, so snapshots list things in the
    order they appeared."""

    seq: int = 0
    participants: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # model_id -> anchor_pose
    annotations: dict[str, dict[str, Any]] = field(default_factory=dict)
    controller: str = ""
    control_requests: list[str] = field(default_factory=list)
    # Strokes drawn over video frames, by telestration_id (ids shared with annotations).
    telestrations: dict[str, dict[str, Any]] = field(default_factory=dict)

    def copy(self) -> SessionState:
        return copy.deepcopy(self)

    def role_of(self, participant_id: str) -> str:
        participant = self.participants.get(participant_id)
        return "" if participant is None else str(participant["role"])

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def public_dict(self) -> dict[str, Any]:
        """The state as clients hold it: token subjects stay on the server."""
        out = asdict(self)
        for participant in out["participants"].values():
            participant["subject"] = ""
        return out


def _first_present_presenter(state: SessionState) -> str:
    return next(
        (pid for pid, p in state.participants.items() if p["role"] == "presenter" and p["present"]),
        "",
    )


def apply(state: SessionState, event: Event) -> None:
    """Fold one event into ``state`` (in place). ``event.seq`` must be ``state.seq + 1``."""
    if event.seq != state.seq + 1:
        raise SessionError(f"event seq {event.seq} does not follow state seq {state.seq}")
    data, kind = event.data, event.kind
    if kind == "joined":
        participant = dict(data["participant"])
        state.participants[participant["participant_id"]] = participant
        if not state.controller and participant["role"] == "presenter":
            state.controller = participant["participant_id"]
    elif kind in ("left", "away", "back"):
        pid = data["participant_id"]
        if kind == "left":
            state.participants.pop(pid, None)
        elif pid in state.participants:
            state.participants[pid]["present"] = kind == "back"
        if kind != "back":
            if pid in state.control_requests:
                state.control_requests.remove(pid)
            if state.controller == pid:  # control falls back to a presenter still here
                state.controller = _first_present_presenter(state)
        elif not state.controller and state.role_of(pid) == "presenter":
            state.controller = pid
    elif kind in ("model_loaded", "anchor_committed"):
        state.models[data["model_id"]] = {"anchor_pose": data["anchor_pose"]}
    elif kind == "annotation_added":
        annotation = dict(data["annotation"])
        state.annotations[annotation["annotation_id"]] = annotation
    elif kind == "annotation_removed":
        state.annotations.pop(data["annotation_id"], None)
        state.telestrations.pop(data["annotation_id"], None)
    elif kind == "telestration_added":
        telestration = dict(data["telestration"])
        state.telestrations[telestration["telestration_id"]] = telestration
    elif kind == "control_requested":
        if data["participant_id"] not in state.control_requests:
            state.control_requests.append(data["participant_id"])
    elif kind == "control_granted":
        pid = data["participant_id"]
        state.controller = pid
        if pid in state.control_requests:
            state.control_requests.remove(pid)
    elif kind == "control_revoked":
        if state.controller == data["participant_id"]:
            state.controller = event.actor if state.role_of(event.actor) == "presenter" else ""
            if not state.controller:
                state.controller = _first_present_presenter(state)
    else:
        raise SessionError(f"unknown event kind {kind!r} at seq {event.seq}")
    state.seq = event.seq


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise PermissionDeniedError(message)


def _check_new_id(state: SessionState, annotation_id: str) -> None:
    if annotation_id in state.annotations or annotation_id in state.telestrations:
        raise InvalidRequestError(f"annotation {annotation_id!r} exists; choose a new id")


def check_intent(state: SessionState, actor: str, kind: str, data: dict[str, Any]) -> None:
    """Raise unless ``actor`` may cause a ``kind`` event with ``data`` in ``state``.

    Roles (ARCHITECTURE.md "Sessions"): the controller (a presenter unless control was
    granted) loads and moves holograms; presenters and experts annotate and point;
    experts request control, presenters grant and revoke it; observers only heartbeat and
    leave (checked before this, by the server's role matrix).
    """
    role = state.role_of(actor)
    if not role:
        raise SessionError(f"participant {actor!r} is not in the session; join it first")
    if kind in ("model_loaded", "anchor_committed", "drag"):
        _need(
            state.controller == actor,
            "only the participant in control loads and moves holograms"
            + ("; ask for control with RequestControl" if role == "expert" else ""),
        )
        if kind != "model_loaded" and data["model_id"] not in state.models:
            raise InvalidRequestError(
                f"model {data['model_id']!r} is not loaded in this session; load it first"
            )
    elif kind == "annotation_added":
        _need(role in ("presenter", "expert"), f"a {role} cannot annotate")
        annotation = data["annotation"]
        _check_new_id(state, annotation["annotation_id"])
        if annotation["model_id"] not in state.models:
            raise InvalidRequestError(
                f"annotations anchor to a loaded model; {annotation['model_id']!r} is not loaded"
            )
    elif kind == "telestration_added":
        _need(role in ("presenter", "expert"), f"a {role} cannot draw on the video")
        _check_new_id(state, data["telestration"]["telestration_id"])
    elif kind == "annotation_removed":
        annotation = state.annotations.get(data["annotation_id"]) or state.telestrations.get(
            data["annotation_id"]
        )
        if annotation is None:
            raise InvalidRequestError(f"no annotation {data['annotation_id']!r} in the session")
        _need(
            annotation["author"] == actor or role == "presenter",
            "only its author or a presenter removes an annotation",
        )
    elif kind == "control_requested":
        _need(role == "expert", f"a {role} does not request control; experts do")
        if state.controller == actor:
            raise InvalidRequestError("you are in control already")
    elif kind in ("control_granted", "control_revoked"):
        _need(role == "presenter", f"only a presenter {kind.split('_')[1]} control")
        target = data["participant_id"]
        if target not in state.participants:
            raise InvalidRequestError(f"participant {target!r} is not in the session")
        if kind == "control_granted":
            _need(
                state.role_of(target) in ("presenter", "expert"),
                "control goes to a presenter or an expert",
            )
        elif state.controller != target:
            raise InvalidRequestError(f"participant {target!r} is not in control")
    elif kind in ("pointer", "head_pose"):
        _need(role in ("presenter", "expert"), f"a {role} does not point")
