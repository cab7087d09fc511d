"""Shared test vectors for the state-at-time buffer: what the Python SDK's
:class:`holo.client.timeline.SessionTimeline` and :class:`~holo.client.timeline.FrameSync`
answer, for the Unity bridge's (unity_bridge/Core/SessionTimeline.cs, FrameSync.cs) and
the page's (holo/web/src/timeline.js).

``python tests/vectors/timeline.py`` writes ``timeline.json``: per scenario (seeded) a list
of operations fed to a real ``SessionTimeline`` and ``FrameSync``, each answer recorded.
A scenario names how its timeline is made: ``horizon_ns``, ``delay_ns``, ``interpolate``
and ``max_gap_ns``. The operations:

* ``reset``: a snapshot (plain form of tests/vectors/session_fold.py) as of ``t_ns``;
* ``event``: an event as a client applies it, in seq order; about a third are stamped up to
  1 s in the past (a client may back-date an intent), so time order differs from seq order;
* ``ephemeral``: a head pose, pointer or live drag, some older than one already held;
* ``query``: ``state_at(t_ns)`` and what it said: ``exact``, the state in brief (its seq,
  participants with presence, each model's pose and commit time, the ids of annotations
  and telestrations, the controller and the requests: which events are folded as of then;
  the fold itself is checked by session_fold.json), the ephemeral values in effect (who,
  which channel, when, and the value: interpolated between two values that bracket the
  moment, in :meth:`EphemeralUpdate.to_json`'s layout), and ``anchor_pose`` of each model
  (a live drag newer than the commit wins);
* ``push`` / ``ready``: frames (their ``t_ns``) into a FrameSync and, at a session time
  ``now_ns``, which came out and the seq and exactness of the state paired with each.

Two sorts of scenario. Random ones: the horizon is short (2 s) so that events and values
fall out of it and are folded into the base; the events are random valid intents
(session_fold.py's generator), the ephemeral values random poses and rays (one scenario
with ``interpolate`` off: the newest value held). Motion ones (:func:`motion`): three
participants moving smoothly, their values paced to the observers' 15 Hz with jitter, and
what interpolation must get right at its edges: values exactly ``max_gap_ns`` apart and
one nanosecond further, pauses, two values at the same moment, a value older than one
held, a quaternion sent as its negative (the short way round) and turns past 90 degrees,
pointer directions that cancel at the midpoint, a drag that moves to another model,
commits between two drag values, heartbeats; values arrive after a delivery latency and
the moments are asked for behind it, some before the value after them has arrived.

Interpolated values are compared exactly: the three implementations do the same
floating-point operations in the same order (``holo.client.timeline.interpolate``).
``tests/test_unity_vectors.py`` checks the file is current; the C# tests replay it
(unity_bridge/Tests/TimelineTests.cs), and so do the page's
(holo/web/test/timeline.test.mjs, run by tests/test_session_vectors.py).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import random
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from holo.client.timeline import FrameSync, SessionTimeline
from holo.session.records import EphemeralUpdate, Participant, Pose, Ray, SceneModel
from holo.session.state import Event, SessionState, apply

OUT = Path(__file__).with_name("timeline.json")
NUMBERS = re.compile(r"\[\s*((?:-?[0-9][0-9.eE+-]*,?\s*)+)\]")
HORIZON_NS = 2_000_000_000
DELAY_NS = 250_000_000
STEP_NS = 50_000_000  # one intent every 50 ms
SCENARIOS = 3
EVENTS = 120
MAX_GAP_NS = 250_000_000  # SessionTimeline's default


def _session_fold() -> ModuleType:
    path = Path(__file__).with_name("session_fold.py")
    spec = importlib.util.spec_from_file_location("holo_vectors_session_fold", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FOLD = _session_fold()


def _log(rng: random.Random, count: int) -> list[Event]:
    """A valid event log (seq order) with session times, some back-dated up to 1 s."""
    state = SessionState()
    events: list[Event] = []
    for n in range(1, count * 4):
        if len(events) == count:
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
        "ephemeral": [
            [u.participant_id, u.channel, u.t_ns, u.to_json()["value"]]
            for u in at.ephemeral.values()
        ],
        "anchor_poses": [[k, _pose_json(at.anchor_pose(k))] for k in sorted(models)],
    }


def scenario(seed: int, interpolate: bool = True, count: int = EVENTS) -> dict[str, Any]:
    rng = random.Random(seed)
    events = _log(rng, count)
    timeline = SessionTimeline(horizon_ns=HORIZON_NS, interpolate=interpolate)
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
    return {
        "seed": seed,
        "horizon_ns": HORIZON_NS,
        "delay_ns": DELAY_NS,
        "interpolate": interpolate,
        "max_gap_ns": timeline.max_gap_ns,
        "ops": ops,
    }

    return {
        "about": (
            "holo state-at-time vectors (holo/client/timeline.py); regenerate with "
            "python tests/vectors/timeline.py"
        ),
        "scenarios": [scenario(seed) for seed in range(SCENARIOS)],
    }


T0 = 10**12
PACED_NS = 66_666_667  # the observers' 15 Hz (HubConfig.observer_ephemeral_interval_s)
MOTION_S = 2


def _quat(axis: tuple[float, float, float], angle: float, sign: float) -> tuple[float, ...]:
    half = angle / 2
    s = math.sin(half) * sign
    return (axis[0] * s, axis[1] * s, axis[2] * s, math.cos(half) * sign)


def _step(rng: random.Random, max_gap_ns: int) -> int:
    """The time to a source's next value: mostly the observers' pace with jitter."""
    r = rng.random()
    if r < 0.05:
        return max_gap_ns  # exactly the gap: interpolated
    if r < 0.10:
        return max_gap_ns + 1  # a nanosecond over it: held
    if r < 0.14:
        return rng.randint(300_000_000, 600_000_000)  # a pause: held
    if r < 0.19:
        return 0  # two values at one moment: the second counts
    return PACED_NS + rng.randint(-8_000_000, 8_000_000)


def _source(
    rng: random.Random, pid: str, channel: str, max_gap_ns: int, end: int, cancel: list[int]
) -> list[tuple[int, EphemeralUpdate]]:
    """One participant's channel moving smoothly, paced to 15 Hz with jitter and edges;
    the moments where pointer directions cancel are added to ``cancel``."""
    axis_raw = [rng.uniform(-1, 1) for _ in range(3)]
    norm = math.sqrt(sum(v * v for v in axis_raw))
    axis = (axis_raw[0] / norm, axis_raw[1] / norm, axis_raw[2] / norm)
    position = [rng.uniform(-0.5, 0.5), rng.uniform(1.0, 1.8), rng.uniform(-1, 0)]
    velocity = [rng.uniform(-0.3, 0.3) for _ in range(3)]  # m/s
    angle, spin = rng.uniform(0, math.tau), rng.uniform(-2, 2)  # rad, rad/s
    direction = [rng.uniform(-1, 1), rng.uniform(-1, 1), -1.0]
    model = "m-1"
    t = T0 + rng.randint(0, PACED_NS)
    out: list[tuple[int, EphemeralUpdate]] = []
    while t < end:
        sign = -1.0 if rng.random() < 0.2 else 1.0  # -q is q: the short way round
        pose = Pose(
            (position[0], position[1], position[2]),
            _quat(axis, angle, sign),  # type: ignore[arg-type]
        )
        value: Any
        if channel == "drag":
            value = SceneModel(model, pose)
        elif channel == "pointer":
            value = Ray((position[0], position[1], position[2]), tuple(direction))  # type: ignore[arg-type]
        elif channel == "heartbeat":
            value = None
        else:
            value = pose
        out.append((t, EphemeralUpdate(pid, channel, t, value)))
        if channel == "pointer" and rng.random() < 0.08:
            # Directions that cancel exactly half way (f = 0.5 over an even gap): held.
            direction = [-v for v in direction]
            cancel.append(t + 33_333_333)
            t += 66_666_666
            continue
        if channel == "drag" and model == "m-1" and t > T0 + (end - T0) * 3 // 5:
            model, step = "m-2", PACED_NS  # a drag of another model next: the older held
        else:
            step = _step(rng, max_gap_ns)
        seconds = step / 1e9
        for k in range(3):
            position[k] += velocity[k] * seconds
            direction[k] += rng.uniform(-0.05, 0.05)
        direction[2] = min(direction[2], -0.5)
        angle += spin * seconds
        if rng.random() < 0.05:
            angle += rng.uniform(3.5, 5.5)  # quaternions in opposite hemispheres
        t += step
    return out


def motion(seed: int, max_gap_ns: int) -> dict[str, Any]:
    """Participants moving smoothly, asked for at every 30 fps frame: interpolation."""
    rng = random.Random(seed)
    end = T0 + MOTION_S * 1_000_000_000
    start = SessionState(seq=5, controller="p-1")
    for pid, role in (("p-1", "presenter"), ("p-2", "expert"), ("p-3", "expert")):
        start.participants[pid] = Participant(pid, role, f"{role.title()} {pid}")
    for model in ("m-1", "m-2"):
        start.models[model] = SceneModel(model, FOLD._pose(rng), t_ns=0)
    timeline = SessionTimeline(interpolate=True, max_gap_ns=max_gap_ns)
    timeline.reset(start.copy(), T0)
    ops: list[dict[str, Any]] = [{"op": "reset", "snapshot": FOLD.plain_state(start, T0)}]

    # Everything arrives a delivery latency after its moment: (arrival, order, op).
    arrivals: list[tuple[int, int, str, Any]] = []
    channels = [("p-1", "drag"), ("p-1", "head_pose"), ("p-2", "pointer")]
    channels += [("p-2", "head_pose"), ("p-3", "pointer"), ("p-3", "heartbeat")]
    drags: list[EphemeralUpdate] = []
    cancel: list[int] = []
    for pid, channel in channels:
        values = _source(rng, pid, channel, max_gap_ns, end, cancel)
        arrived = T0
        for t, update in values:
            arrived = max(arrived, t + rng.randint(5_000_000, 80_000_000))
            arrivals.append((arrived, len(arrivals), "ephemeral", update))
            if rng.random() < 0.04:  # an older value than one held: skipped
                stale = EphemeralUpdate(pid, channel, t - rng.randint(1, 50_000_000), update.value)
                arrivals.append((arrived + 1_000_000, len(arrivals), "ephemeral", stale))
            if channel == "drag":
                drags.append(update)
    # Commits of the dragged model between two of its drag values (the drag's older time
    # decides whether it shows instead of the commit), in seq order as a client gets them.
    seq = start.seq
    for older, newer in itertools.pairwise(drags):
        if newer.t_ns > older.t_ns + 2 and rng.random() < 0.15:
            assert isinstance(older.value, SceneModel)
            seq += 1
            t = rng.randint(older.t_ns + 1, newer.t_ns - 1)
            committed = SceneModel(older.value.model_id, FOLD._pose(rng))
            event = Event(seq, t, "p-1", "anchor_committed", committed)
            arrivals.append((t + 20_000_000, len(arrivals), "event", event))
    # The moments asked for: every 30 fps frame, each value's own moment, the midpoints
    # where pointer directions cancel; asked a lag after the moment, some before the value
    # after it has arrived (the newest then held).
    moments = {T0 + round(k * 1e9 / 30) for k in range(-3, MOTION_S * 30 + 3)} | set(cancel)
    for _time, _order, kind, item in arrivals:
        if kind == "ephemeral" and rng.random() < 0.1:
            moments.add(item.t_ns)
    asks = [
        (t + rng.choice([40_000_000, 120_000_000, 300_000_000]), 2**62 + t, "query", t)
        for t in sorted(moments)
    ]
    for _time, _order, kind, item in sorted(arrivals + asks, key=lambda a: (a[0], a[1])):
        if kind == "ephemeral":
            timeline.on_ephemeral(item)
            ops.append({"op": "ephemeral", "update": FOLD.plain_update(item)})
        elif kind == "event":
            timeline.on_event(item)
            ops.append({"op": "event", "event": FOLD.plain_event(item)})
        else:
            ops.append({"op": "query", "t_ns": item, "expected": _answer(timeline, item)})
    return {
        "seed": seed,
        "horizon_ns": timeline.horizon_ns,
        "delay_ns": DELAY_NS,
        "interpolate": True,
        "max_gap_ns": max_gap_ns,
        "ops": ops,
    }


def vectors() -> dict[str, Any]:
    return {
        "about": (
            "holo state-at-time vectors (holo/client/timeline.py); regenerate with "
            "python tests/vectors/timeline.py"
        ),
        "scenarios": [
            *(scenario(seed) for seed in range(SCENARIOS)),
            scenario(SCENARIOS, interpolate=False, count=EVENTS // 2),
            motion(10, MAX_GAP_NS),
            motion(11, 100_000_000),
        ],
    }


def render() -> str:
    # Arrays of numbers on one line: a pose is two lines, not eleven.
    text = json.dumps(vectors(), indent=1, sort_keys=True)
    return NUMBERS.sub(lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    sys.exit(0)
