"""A session's state as the fold of its durable events, and the rules intents must meet.

Transport-neutral (no grpc, no generated code): events are :class:`Event` records with a
``kind`` and a typed payload (:mod:`holo.session.records`); :func:`apply` folds one into a
:class:`SessionState`. The fold is deterministic and total over valid logs, so every node
and every client that applies the same events in the same order holds the same state
(the property test checks this against clients' own folds).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from holo.errors import InvalidRequestError, PermissionDeniedError, SessionError
from holo.session.limits import SessionLimits
from holo.session.records import (
    Annotation,
    EphemeralValue,
    Participant,
    SceneModel,
    Telestration,
)

__all__ = [
    "DURABLE_KINDS",
    "PARTICIPANT_KINDS",
    "Event",
    "EventData",
    "SessionState",
    "apply",
    "check_intent",
]

#: Durable event kinds and what their ``data`` holds.
DURABLE_KINDS = {
    "joined": "Participant",
    "left": "participant id",
    "away": "participant id",
    "back": "participant id",
    "model_loaded": "SceneModel",
    "anchor_committed": "SceneModel",
    "annotation_added": "Annotation",
    "annotation_removed": "annotation id (an annotation's or a telestration's)",
    "telestration_added": "Telestration",
    "control_requested": "participant id",
    "control_granted": "participant id",
    "control_revoked": "participant id (who loses it); control returns to a presenter",
}
#: Event kinds whose payload is one participant id.
PARTICIPANT_KINDS = frozenset(
    {"left", "away", "back", "control_requested", "control_granted", "control_revoked"}
)

EventData = Participant | SceneModel | Annotation | Telestration | str


@dataclass
class Event:
    """One durable event: ``seq`` (gap-free from 1), session-clock ``t_ns``, the actor, and
    the client's ``intent_id`` when it gave one (a retried intent is found by it)."""

    seq: int
    t_ns: int
    actor: str
    kind: str
    data: EventData
    intent_id: str = ""

    def encode(self) -> bytes:
        """The JSON form on the bus and in recordings (the layout they have always had)."""
        data: dict[str, Any]
        d = self.data
        if isinstance(d, Participant):
            data = {"participant": d.to_json()}
        elif isinstance(d, SceneModel):
            data = d.to_json()
        elif isinstance(d, Annotation):
            data = {"annotation": d.to_json()}
        elif isinstance(d, Telestration):
            data = {"telestration": d.to_json()}
        elif self.kind == "annotation_removed":
            data = {"annotation_id": d}
        else:
            data = {"participant_id": d}
        if self.intent_id:
            data["intent_id"] = self.intent_id
        raw = {"seq": self.seq, "t_ns": self.t_ns, "actor": self.actor, "kind": self.kind}
        return json.dumps({**raw, "data": data}, separators=(",", ":")).encode()

    @staticmethod
    def decode(payload: bytes) -> Event:
        raw = json.loads(payload)
        kind, d = raw["kind"], raw["data"]
        data: EventData
        if kind == "joined":
            data = Participant.from_json(d["participant"])
        elif kind in ("model_loaded", "anchor_committed"):
            data = SceneModel.from_json(d)
        elif kind == "annotation_added":
            data = Annotation.from_json(d["annotation"])
        elif kind == "telestration_added":
            data = Telestration.from_json(d["telestration"])
        elif kind == "annotation_removed":
            data = str(d["annotation_id"])
        elif kind in PARTICIPANT_KINDS:
            data = str(d["participant_id"])
        else:
            raise ValueError(f"unknown event kind {kind!r}")
        return Event(raw["seq"], raw["t_ns"], raw["actor"], kind, data, d.get("intent_id", ""))

    def participant_id(self) -> str:
        """The participant a membership or control event is about."""
        return self.data.participant_id if isinstance(self.data, Participant) else str(self.data)


@dataclass
class SessionState:
    """The state at ``seq``. Dicts keep insertion order, so snapshots list things in the
    order they appeared."""

    seq: int = 0
    participants: dict[str, Participant] = field(default_factory=dict)
    models: dict[str, SceneModel] = field(default_factory=dict)
    annotations: dict[str, Annotation] = field(default_factory=dict)
    controller: str = ""
    control_requests: list[str] = field(default_factory=list)
    # Strokes drawn over video frames, by telestration_id (ids shared with annotations).
    telestrations: dict[str, Telestration] = field(default_factory=dict)

    def copy(self) -> SessionState:
        # The records are frozen: copying the containers is a full copy.
        return SessionState(
            self.seq,
            dict(self.participants),
            dict(self.models),
            dict(self.annotations),
            self.controller,
            list(self.control_requests),
            dict(self.telestrations),
        )

    def role_of(self, participant_id: str) -> str:
        participant = self.participants.get(participant_id)
        return "" if participant is None else participant.role

    def public_dict(self) -> dict[str, Any]:
        """The state as clients hold it, as plain data: token subjects stay on the server,
        commit times (a client timeline's own) are left out, and so is the registration
        that a placement by hand does not have."""
        out = asdict(self.copy_public())
        for model in out["models"].values():
            del model["t_ns"]
            if model["registration"] is None:  # placed by hand: no figures, as on the wire
                del model["registration"]
        return out

    def copy_public(self) -> SessionState:
        """A copy without token subjects (what any client may hold)."""
        state = self.copy()
        state.participants = {k: replace(p, subject="") for k, p in self.participants.items()}
        return state


def _first_present_presenter(state: SessionState) -> str:
    return next(
        (pid for pid, p in state.participants.items() if p.role == "presenter" and p.present),
        "",
    )


def apply(state: SessionState, event: Event) -> None:
    """Fold one event into ``state`` (in place). ``event.seq`` must be ``state.seq + 1``."""
    if event.seq != state.seq + 1:
        raise SessionError(f"event seq {event.seq} does not follow state seq {state.seq}")
    data, kind = event.data, event.kind
    if kind == "joined" and isinstance(data, Participant):
        state.participants[data.participant_id] = data
        if not state.controller and data.role == "presenter":
            state.controller = data.participant_id
    elif kind in ("left", "away", "back"):
        pid = event.participant_id()
        if kind == "left":
            state.participants.pop(pid, None)
        elif pid in state.participants:
            state.participants[pid] = replace(state.participants[pid], present=kind == "back")
        if kind != "back":
            if pid in state.control_requests:
                state.control_requests.remove(pid)
            if state.controller == pid:  # control falls back to a presenter still here
                state.controller = _first_present_presenter(state)
        elif not state.controller and state.role_of(pid) == "presenter":
            state.controller = pid
    elif kind in ("model_loaded", "anchor_committed") and isinstance(data, SceneModel):
        state.models[data.model_id] = data
    elif kind == "annotation_added" and isinstance(data, Annotation):
        state.annotations[data.annotation_id] = data
    elif kind == "annotation_removed" and isinstance(data, str):
        state.annotations.pop(data, None)
        state.telestrations.pop(data, None)
    elif kind == "telestration_added" and isinstance(data, Telestration):
        state.telestrations[data.telestration_id] = data
    elif kind == "control_requested":
        if event.participant_id() not in state.control_requests:
            state.control_requests.append(event.participant_id())
    elif kind == "control_granted":
        pid = event.participant_id()
        state.controller = pid
        if pid in state.control_requests:
            state.control_requests.remove(pid)
    elif kind == "control_revoked":
        if state.controller == event.participant_id():
            state.controller = event.actor if state.role_of(event.actor) == "presenter" else ""
            if not state.controller:
                state.controller = _first_present_presenter(state)
    else:
        raise SessionError(f"event {kind!r} at seq {event.seq} is unknown or malformed")
    state.seq = event.seq


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise PermissionDeniedError(message)


def _check_new_id(state: SessionState, annotation_id: str) -> None:
    if annotation_id in state.annotations or annotation_id in state.telestrations:
        raise InvalidRequestError(f"annotation {annotation_id!r} exists; choose a new id")


_DEFAULT_LIMITS = SessionLimits()


def check_intent(
    state: SessionState,
    actor: str,
    kind: str,
    data: EventData | EphemeralValue,
    limits: SessionLimits = _DEFAULT_LIMITS,
) -> None:
    """Raise unless ``actor`` may cause a ``kind`` event (or ephemeral value) with ``data``,
    within ``limits`` (every field in bounds, no collection past its bound).

    Roles (ARCHITECTURE.md "Sessions"): the controller (a presenter unless control was
    granted) loads and moves holograms; presenters and experts annotate and point;
    experts request control, presenters grant and revoke it; observers only heartbeat and
    leave (checked before this, by the server's role matrix).
    """
    role = state.role_of(limits.check_id(actor, "participant_id"))
    if not role:
        raise SessionError(f"participant {actor!r} is not in the session; join it first")
    limits.check_record(data)
    if kind in ("model_loaded", "anchor_committed", "drag"):
        _need(
            state.controller == actor,
            "only the participant in control loads and moves holograms"
            + ("; ask for control with RequestControl" if role == "expert" else ""),
        )
        assert isinstance(data, SceneModel)
        if kind != "model_loaded" and data.model_id not in state.models:
            raise InvalidRequestError(
                f"model {data.model_id!r} is not loaded in this session; load it first"
            )
    elif kind == "annotation_added":
        _need(role in ("presenter", "expert"), f"a {role} cannot annotate")
        assert isinstance(data, Annotation)
        _check_new_id(state, data.annotation_id)
        if data.model_id not in state.models:
            raise InvalidRequestError(
                f"annotations anchor to a loaded model; {data.model_id!r} is not loaded"
            )
    elif kind == "telestration_added":
        _need(role in ("presenter", "expert"), f"a {role} cannot draw on the video")
        assert isinstance(data, Telestration)
        _check_new_id(state, data.telestration_id)
    elif kind == "annotation_removed":
        assert isinstance(data, str)
        annotation = state.annotations.get(data) or state.telestrations.get(data)
        if annotation is None:
            raise InvalidRequestError(f"no annotation {data!r} in the session")
        _need(
            annotation.author == actor or role == "presenter",
            "only its author or a presenter removes an annotation",
        )
    elif kind == "control_requested":
        _need(role == "expert", f"a {role} does not request control; experts do")
        if state.controller == actor:
            raise InvalidRequestError("you are in control already")
    elif kind in ("control_granted", "control_revoked"):
        _need(role == "presenter", f"only a presenter {kind.split('_')[1]} control")
        assert isinstance(data, str)
        if data not in state.participants:
            raise InvalidRequestError(f"participant {data!r} is not in the session")
        if kind == "control_granted":
            _need(
                state.role_of(data) in ("presenter", "expert"),
                "control goes to a presenter or an expert",
            )
        elif state.controller != data:
            raise InvalidRequestError(f"participant {data!r} is not in control")
    elif kind in ("pointer", "head_pose"):
        _need(role in ("presenter", "expert"), f"a {role} does not point")
    if kind in ("model_loaded", "annotation_added", "telestration_added"):
        limits.check_room(state, data)
