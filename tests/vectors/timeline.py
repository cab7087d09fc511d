"""Shared test vectors for the state-at-time buffer: what the Python SDK's
:class:`holo.client.timeline.SessionTimeline` and :class:`~holo.client.timeline.FrameSync`
answer, for the Unity bridge's (unity_bridge/Core/SessionTimeline.cs, FrameSync.cs).

``python tests/vectors/timeline.py`` writes ``timeline.json``: per scenario (seeded) a list
of operations fed to a real ``SessionTimeline`` and ``FrameSync``, each answer recorded:

* ``reset``: a snapshot (plain form of tests/vectors/session_fold.py) as of ``t_ns``;
* ``event``: an event as a client applies it, in seq order; about a third are stamped up to
  1 s in the past (a client may back-date an intent), so time order differs from seq order;
* ``ephemeral``: a head pose, pointer or live drag, some older than one already held;
* ``query``: ``state_at(t_ns)`` and what it said: ``exact``, the state in brief (its seq,
  participants with presence, each model's pose and commit time, the ids of annotations
  and telestrations, the controller and the requests: which events are folded as of then;
  the fold itself is checked by session_fold.json), the ephemeral values in effect (who,
  which channel, when), and ``anchor_pose`` of each model (a live drag newer than the
  commit wins);
* ``push`` / ``ready``: frames (their ``t_ns``) into a FrameSync and, at a session time
  ``now_ns``, which came out and the seq and exactness of the state paired with each.

The horizon is short (2 s) so that events and values fall out of it and are folded into
the base. The events are random valid intents (session_fold.py's generator).
``tests/test_unity_vectors.py`` checks the file is current; the C# tests replay it
(TimelineVectorTests.cs).
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from holo.client.timeline import FrameSync, SessionTimeline
from holo.session.records import EphemeralUpdate, Pose, Ray, SceneModel
from holo.session.state import Event, SessionState, apply

OUT = Path(__file__).with_name("timeline.json")
HORIZON_NS = 2_000_000_000
DELAY_NS = 250_000_000
STEP_NS = 50_000_000  # one intent every 50 ms
SCENARIOS = 3
EVENTS = 120


def _session_fold() -> ModuleType:
    path = Path(__file__).with_name("session_fold.py")
    spec = importlib.util.spec_from_file_location("holo_vectors_session_fold", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FOLD = _session_fold()


def _log(rng: random.Random) -> list[Event]:
    """A valid event log (seq order) with session times, some back-dated up to 1 s."""
    state = SessionState()
    events: list[Event] = []
    for n in range(1, EVENTS * 4):
        if len(events) == EVENTS:
            break
        actor, kind, data = FOLD._intent(rng, state, n)
        if not FOLD._valid(state, actor, kind, data):
            continue
        t_ns = 10**12 + STEP_NS * (len(events) + 1)
        if rng.random() < 0.35:
            t_ns -= rng.randint(0, 999_999_999)
        event = Event(state.seq + 1, t_ns, actor, kind, data)
        apply(state, event)
        events.append(event)
    return events


def _update(rng: random.Random, state: SessionState, t_ns: int) -> EphemeralUpdate | None:
    people = list(state.participants)
    if not people:
        return None
    pid = rng.choice(people)
    channel = rng.choice(["head_pose", "pointer", "drag"])
    if channel == "drag":
        if not state.models:
            return None
        return EphemeralUpdate(
            pid, "drag", t_ns, SceneModel(rng.choice(list(state.models)), FOLD._pose(rng))
        )
    if channel == "pointer":
        ray = Ray(FOLD._point(rng), (rng.uniform(-1, 1), rng.uniform(-1, 1), -1.0))
        return EphemeralUpdate(pid, "pointer", t_ns, ray)
    return EphemeralUpdate(pid, "head_pose", t_ns, FOLD._pose(rng))


def _pose_json(pose: Pose | None) -> dict[str, Any] | None:
    return None if pose is None else pose.to_json()


def _answer(timeline: SessionTimeline, t_ns: int) -> dict[str, Any]:
    at = timeline.state_at(t_ns)
    models = set(at.state.models) | {
        u.value.model_id for u in at.ephemeral.values() if isinstance(u.value, SceneModel)
    }
    state = at.state
    return {
        "seq": state.seq,
        "exact": at.exact,
        "participants": [[k, p.present] for k, p in state.participants.items()],
        "models": [[k, m.anchor_pose.to_json(), m.t_ns] for k, m in state.models.items()],
        "annotations": list(state.annotations),
        "telestrations": list(state.telestrations),
        "controller": state.controller,
        "control_requests": list(state.control_requests),
        "ephemeral": [[u.participant_id, u.channel, u.t_ns] for u in at.ephemeral.values()],
        "anchor_poses": [[k, _pose_json(at.anchor_pose(k))] for k in sorted(models)],
    }


def scenario(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    events = _log(rng)
    timeline = SessionTimeline(horizon_ns=HORIZON_NS)
    frames: FrameSync[int] = FrameSync(timeline, delay_ns=DELAY_NS, t_of=lambda t: t)
    # Start from a snapshot at some seq (a late joiner), as of just after its last event.
    at = rng.randint(0, len(events) // 4)
    start = SessionState()
    for event in events[:at]:
        apply(start, event)
    start_t = max([e.t_ns for e in events[:at]], default=10**12)
    ops: list[dict[str, Any]] = [
        {"op": "reset", "snapshot": FOLD.plain_state(start.copy_public(), start_t)}
    ]
    timeline.reset(start.copy_public(), start_t)
    state = start.copy_public()
    newest = start_t
    for event in events[at:]:
        apply(state, event)
        timeline.on_event(event)
        ops.append({"op": "event", "event": FOLD.plain_event(event)})
        newest = max(newest, event.t_ns)
        for _ in range(rng.randint(0, 2)):
            t = newest - rng.randint(0, 400_000_000)
            update = _update(rng, state, t)
            if update is not None:
                timeline.on_ephemeral(update)
                ops.append({"op": "ephemeral", "update": FOLD.plain_update(update)})
        if rng.random() < 0.5:
            frame_t = newest - rng.randint(0, 300_000_000)
            frames.push(frame_t)
            ops.append({"op": "push", "t_ns": frame_t})
        if rng.random() < 0.3:
            now = newest + rng.randint(0, 100_000_000)
            ready = frames.ready(now)
            out = [[t, s.state.seq, s.exact] for t, s in ready]
            ops.append({"op": "ready", "now_ns": now, "expected": out})
        if rng.random() < 0.3:
            # Recent moments, moments past the horizon (inexact), and the newest.
            t = rng.choice(
                [
                    newest - rng.randint(0, 1_500_000_000),
                    newest - rng.randint(2_000_000_000, 4_000_000_000),
                    newest,
                ]
            )
            ops.append({"op": "query", "t_ns": t, "expected": _answer(timeline, t)})
    drained = [[t, s.state.seq, s.exact] for t, s in frames.drain()]
    ops.append({"op": "drain", "expected": drained})
    return {"seed": seed, "horizon_ns": HORIZON_NS, "delay_ns": DELAY_NS, "ops": ops}


def vectors() -> dict[str, Any]:
    return {
        "about": (
            "holo state-at-time vectors (holo/client/timeline.py); regenerate with "
            "python tests/vectors/timeline.py"
        ),
        "scenarios": [scenario(seed) for seed in range(SCENARIOS)],
    }


def render() -> str:
    return json.dumps(vectors(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    sys.exit(0)
