"""Shared test vectors for the session fold: the Python SDK, the web page and the Unity
bridge fold the same wire events into the same state.

``python tests/vectors/session_fold.py`` writes ``session_fold.json``: scenarios of
random valid intents (seeded, so the file is the same every run), each as a snapshot on
the wire at some ``seq``, the wire events after it, and the state they fold to
(:meth:`holo.session.state.SessionState.public_dict`). Every kind of durable event is in
them. ``tests/test_session_vectors.py`` checks the file is current, that the Python fold
gives the expected states, and runs the web page's fold on them (``node --test``).

The Unity bridge's core cannot parse protobuf (no Google.Protobuf on the machines that test
it), so each scenario also holds the snapshot and the events in a plain JSON form: what the
Python client decodes from those bytes, written by :func:`plain_snapshot` and
:func:`plain_event` (the records' own JSON layout, that of the bus and of recordings), and
``expected_order``: the ids of each collection in the order the state holds them (the
expected state's keys are sorted in the file). ``tests/test_unity_vectors.py`` checks the
plain forms are what the bytes decode to; the C# tests fold them
(``unity_bridge/Tests/SessionFoldVectorTests.cs``).
"""

from __future__ import annotations

import base64
import json
import random
import sys
from pathlib import Path
from typing import Any

from holo.errors import HoloError
from holo.session.records import (
    Annotation,
    EphemeralUpdate,
    Participant,
    Pose,
    SceneModel,
    Telestration,
)
from holo.session.state import Event, EventData, SessionState, apply, check_intent
from holo.v1 import session_pb2
from holo.wire.session import (
    event_from_message,
    event_message,
    snapshot_message,
    state_from_snapshot,
)

OUT = Path(__file__).with_name("session_fold.json")
SCENARIOS = 12
#: Scenarios that start from the empty state (snapshot at seq 0), so a client folds every
#: event of the log: the random snapshot points of the others left some kinds (a revoke,
#: for one) only ever before the snapshot, never folded by a client.
FROM_START = 4
STEPS = 80


def _pose(rng: random.Random) -> Pose:
    q = [rng.uniform(-1, 1) for _ in range(4)]
    norm = sum(c * c for c in q) ** 0.5
    position = (round(rng.uniform(-1, 1), 4), round(rng.uniform(0, 2), 4), rng.uniform(-1, 1))
    return Pose(position, tuple(c / norm for c in q))  # type: ignore[arg-type]


def _point(rng: random.Random) -> tuple[float, float, float]:
    return (rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2))


def _intent(rng: random.Random, state: SessionState, n: int) -> tuple[str, str, EventData]:
    """A random intent (actor, kind, data); check_intent decides whether it is valid."""
    people = list(state.participants)
    actor = rng.choice(people) if people else ""
    models = list(state.models) or ["m-knee"]
    notes = list(state.annotations) + list(state.telestrations)
    kind = rng.choice(
        [
            "joined", "joined", "left", "away", "back", "model_loaded", "anchor_committed",
            "annotation_added", "annotation_added", "annotation_removed", "telestration_added",
            "control_requested", "control_granted", "control_revoked",
        ]
    )  # fmt: skip
    data: EventData
    if kind == "joined":
        pid = f"p-{n}"
        role = rng.choice(["presenter", "expert", "expert", "observer"])
        return pid, kind, Participant(pid, role, f"{role.title()} {n}", "", True)
    if kind in ("left", "away", "back"):
        return actor, kind, actor
    if kind in ("model_loaded", "anchor_committed"):
        model = f"m-{rng.randint(1, 2)}" if kind == "model_loaded" else rng.choice(models)
        return actor, kind, SceneModel(model, _pose(rng))
    if kind == "annotation_added":
        shape = rng.choice(["marker", "stroke", "label"])
        count = {"marker": 1, "label": 1, "stroke": rng.randint(2, 6)}[shape]
        points = tuple(_point(rng) for _ in range(count))
        text = f"note {n}" if shape == "label" else ""
        data = Annotation(f"a-{n}", rng.choice(models), actor, shape, points, text)
        return actor, kind, data
    if kind == "annotation_removed":
        return actor, kind, rng.choice(notes) if notes else "a-none"
    if kind == "telestration_added":
        points = tuple((rng.random(), rng.random()) for _ in range(rng.randint(2, 5)))
        data = Telestration(f"t-{n}", "trk-1", n * 1000, actor, points, rng.randint(0, 0xFFFFFF))
        return actor, kind, data
    if kind == "control_requested":
        return actor, kind, actor
    target = rng.choice(people) if people else ""
    return actor, kind, target


def _valid(state: SessionState, actor: str, kind: str, data: EventData) -> bool:
    if kind == "joined":
        return True
    if kind in ("left", "away", "back"):
        present = state.participants.get(actor)
        return present is not None and (kind != "back" or not present.present)
    try:
        check_intent(state, actor, kind, data)
    except HoloError:
        return False
    return True


def plain_event(event: Event) -> dict[str, Any]:
    """An event as plain JSON: ``seq``, ``t_ns``, ``actor``, ``kind`` and ``data`` in the
    layout of :meth:`holo.session.state.Event.encode` (the bus's and recordings')."""
    plain: dict[str, Any] = json.loads(event.encode())
    return plain


def plain_state(state: SessionState, t_ns: int) -> dict[str, Any]:
    """A client's state as a plain snapshot taken at ``t_ns``: every collection a list in
    the state's order (a fold depends on it: control falls back to the first presenter)."""
    return {
        "seq": state.seq,
        "t_ns": t_ns,
        "participants": [p.to_json() for p in state.participants.values()],
        "models": [m.to_json() for m in state.models.values()],
        "annotations": [a.to_json() for a in state.annotations.values()],
        "controller": state.controller,
        "control_requests": list(state.control_requests),
        "telestrations": [t.to_json() for t in state.telestrations.values()],
    }


def plain_snapshot(snapshot: session_pb2.SessionSnapshot) -> dict[str, Any]:
    """A wire snapshot as plain JSON: what the Python client decodes from it."""
    return plain_state(state_from_snapshot(snapshot), snapshot.t_ns)


def plain_update(update: EphemeralUpdate) -> dict[str, Any]:
    """An ephemeral value as plain JSON (:meth:`EphemeralUpdate.to_json`'s layout)."""
    return update.to_json()


def state_order(state: SessionState) -> dict[str, list[str]]:
    """The ids of each collection of ``state`` in the order it holds them."""
    return {
        "participants": list(state.participants),
        "models": list(state.models),
        "annotations": list(state.annotations),
        "telestrations": list(state.telestrations),
    }


def _b64(message: object) -> str:
    return base64.b64encode(message.SerializeToString()).decode()  # type: ignore[attr-defined]


def scenario(seed: int, from_start: bool = False) -> dict[str, object]:
    rng = random.Random(seed)
    state = SessionState()
    events: list[Event] = []
    for n in range(1, STEPS * 4):
        if len(events) == STEPS:
            break
        actor, kind, data = _intent(rng, state, n)
        if not _valid(state, actor, kind, data):
            continue
        event = Event(state.seq + 1, 1_000_000 * n, actor, kind, data)
        apply(state, event)
        events.append(event)
    # The snapshot a late joiner gets at some seq, then the events after it.
    at = rng.randint(0, len(events))
    if from_start:
        at = 0
    start = SessionState()
    for event in events[:at]:
        apply(start, event)
    snapshot = snapshot_message(start.copy_public(), 1_000_000 * (at + 1))
    wire = [event_message(e) for e in events[at:]]
    # Expected: what a client folds from these bytes (a receiver renormalises each
    # rotation, so a pose can differ from the server's in its last bit).
    folded = state_from_snapshot(snapshot)
    received = [event_from_message(message) for message in wire]
    for event in received:
        apply(folded, event)
    assert folded.seq == state.seq and list(folded.annotations) == list(state.annotations)
    return {
        "seed": seed,
        "snapshot": _b64(snapshot),
        "events": [_b64(m) for m in wire],
        "snapshot_plain": plain_snapshot(snapshot),
        "events_plain": [plain_event(e) for e in received],
        "kinds": sorted({e.kind for e in received}),  # what a client folds
        "expected": folded.public_dict(),
        "expected_order": state_order(folded),
    }


def vectors() -> dict[str, object]:
    return {
        "about": "holo session fold vectors; regenerate with python tests/vectors/session_fold.py",
        "scenarios": [scenario(seed) for seed in range(SCENARIOS)]
        + [scenario(seed, True) for seed in range(SCENARIOS, SCENARIOS + FROM_START)],
    }


def render() -> str:
    return json.dumps(vectors(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    sys.exit(0)
