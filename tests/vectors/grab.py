"""Shared test vectors for grab-to-move, for the Unity bridge (unity_bridge/Core/AnchorGrab.cs).

The participant in control grabs a model, moves the hand and lets go (docs/headsets.md,
"Input"; the page's press / hold / release in holo/web/src/immersive.js). The model rides
the hand rigidly: with H0 the hand and A0 the anchor (model -> room) at the grab and H
the hand now, the anchor is H * inverse(H0) * A0. Everything is in the room frame, glTF
convention (right-handed, +Y up, metres, quaternions x, y, z, w).

The expected anchors here do not restate the C# quaternion algebra: they are composed as
4 x 4 rigid matrices in plain Python (no numpy, no scipy) and read back as quaternions from
the matrix (Shepperd's method), so the sign of a quaternion is not part of the contract
(q and -q are one rotation). What is sent follows the page's still rule: a step whose
anchor is within 1 mm and 0.2 degrees of the last anchor shown is tracking noise (not
moved, nothing sent); otherwise it is shown and sent as a Drag. The commit on release is
the last anchor shown, or nothing when the model never moved. Noise steps stay under
0.6 mm and 0.05 degrees and moves are at least 5 mm or 2 degrees, so no decision sits near
a threshold where rounding could flip it (checked when the file is made).

``python tests/vectors/grab.py`` writes ``grab.json``; ``tests/test_unity_vectors.py``
checks it is current and rigid; the C# tests replay it (AnchorGrabTests.cs).
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("grab.json")
STILL_METRES = 0.001  # holo/web/src/immersive.js STILL_M
STILL_DEGREES = 0.2  # holo/web/src/immersive.js STILL_RAD, in degrees
RANDOM_CASES = 6
STEPS = 10

Quat = tuple[float, float, float, float]
Vec = list[float]
Matrix = list[list[float]]  # 4 x 4, acting on column vectors [x, y, z, 1]


def matrix(position: Vec, q: Quat) -> Matrix:
    """The rigid transform of unit quaternion ``q`` (x, y, z, w), then ``position``."""
    x, y, z, w = q
    return [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w), position[0]],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w), position[1]],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y), position[2]],
        [0.0, 0.0, 0.0, 1.0],
    ]


def multiply(a: Matrix, b: Matrix) -> Matrix:
    return [[sum(a[i][k] * b[k][j] for k in range(4)) for j in range(4)] for i in range(4)]


def inverse(m: Matrix) -> Matrix:
    """The inverse of a rigid transform: the transposed rotation, and -R^T t."""
    r = [[m[j][i] for j in range(3)] for i in range(3)]
    t = [-sum(r[i][k] * m[k][3] for k in range(3)) for i in range(3)]
    return [[*r[0], t[0]], [*r[1], t[1]], [*r[2], t[2]], [0.0, 0.0, 0.0, 1.0]]


def quaternion(m: Matrix) -> list[float]:
    """The unit quaternion (x, y, z, w) of the rotation in ``m`` (Shepperd's method: from
    the largest of the four diagonal combinations), with w >= 0."""
    trace = m[0][0] + m[1][1] + m[2][2]
    k = max(range(4), key=lambda i: [trace, m[0][0], m[1][1], m[2][2]][i])
    if k == 0:
        s = math.sqrt(1.0 + trace) * 2
        q = [(m[2][1] - m[1][2]) / s, (m[0][2] - m[2][0]) / s, (m[1][0] - m[0][1]) / s, s / 4]
    elif k == 1:
        s = math.sqrt(1.0 + m[0][0] - m[1][1] - m[2][2]) * 2
        q = [s / 4, (m[0][1] + m[1][0]) / s, (m[0][2] + m[2][0]) / s, (m[2][1] - m[1][2]) / s]
    elif k == 2:
        s = math.sqrt(1.0 + m[1][1] - m[0][0] - m[2][2]) * 2
        q = [(m[0][1] + m[1][0]) / s, s / 4, (m[1][2] + m[2][1]) / s, (m[0][2] - m[2][0]) / s]
    else:
        s = math.sqrt(1.0 + m[2][2] - m[0][0] - m[1][1]) * 2
        q = [(m[0][2] + m[2][0]) / s, (m[1][2] + m[2][1]) / s, s / 4, (m[1][0] - m[0][1]) / s]
    return q if q[3] >= 0 else [-c for c in q]


def pose(m: Matrix) -> dict[str, list[float]]:
    return {"position": [m[0][3], m[1][3], m[2][3]], "rotation": quaternion(m)}


def difference(a: Matrix, b: Matrix) -> tuple[float, float]:
    """How far apart two rigid transforms are: metres between origins, degrees between
    rotations (from the trace of Ra^T Rb)."""
    metres = math.dist([a[i][3] for i in range(3)], [b[i][3] for i in range(3)])
    trace = sum(a[k][i] * b[k][i] for i in range(3) for k in range(3))
    return metres, math.degrees(math.acos(max(-1.0, min(1.0, (trace - 1) / 2))))


def moved(a: Matrix, b: Matrix) -> bool:
    metres, degrees = difference(a, b)
    # No decision near a threshold: rounding in another implementation cannot flip it.
    assert abs(metres - STILL_METRES) > 1e-5 and abs(degrees - STILL_DEGREES) > 1e-3
    return metres > STILL_METRES or degrees > STILL_DEGREES


def _unit(rng: random.Random) -> Quat:
    q = [rng.gauss(0, 1) for _ in range(4)]
    norm = math.sqrt(sum(c * c for c in q))
    x, y, z, w = (c / norm for c in q)
    return (x, y, z, w)


def _turn(axis: Vec, degrees: float) -> Quat:
    """A rotation of ``degrees`` about ``axis`` (any length)."""
    norm = math.sqrt(sum(c * c for c in axis))
    s = math.sin(math.radians(degrees) / 2) / norm
    return (axis[0] * s, axis[1] * s, axis[2] * s, math.cos(math.radians(degrees) / 2))


def _direction(rng: random.Random) -> Vec:
    v = [rng.gauss(0, 1) for _ in range(3)]
    norm = math.sqrt(sum(c * c for c in v))
    return [c / norm for c in v]


def _about_hand(hand: Matrix, step: Vec, axis: Vec, degrees: float) -> Matrix:
    """The hand moved by ``step`` (room frame) and turned about its own origin by
    ``degrees`` about ``axis`` (hand frame)."""
    moved_hand = multiply(hand, matrix([0.0, 0.0, 0.0], _turn(axis, degrees)))
    for i in range(3):
        moved_hand[i][3] += step[i]
    return moved_hand


def replay(name: str, hand0: Matrix, anchor0: Matrix, hands: list[Matrix]) -> dict[str, Any]:
    """The grab of a model at ``anchor0`` by a hand at ``hand0``, then the hand at each of
    ``hands``: each step's anchor and whether it moved; the commit on release."""
    in_hand = multiply(inverse(hand0), anchor0)
    shown = anchor0
    steps = []
    for hand in hands:
        anchor = multiply(hand, in_hand)
        step_moved = moved(shown, anchor)
        if step_moved:
            shown = anchor
        steps.append({"hand": pose(hand), "anchor": pose(anchor), "moved": step_moved})
    committed = any(s["moved"] for s in steps)
    return {
        "name": name,
        "hand_at_grab": pose(hand0),
        "anchor_at_grab": pose(anchor0),
        "steps": steps,
        "commit": pose(shown) if committed else None,
    }


def _case(rng: random.Random, name: str, kinds: list[str]) -> dict[str, Any]:
    """A grab with a step of each kind: ``noise`` (under 0.2 mm and 0.03 degrees from
    the hand where the model was last shown), ``drift`` (0.4 mm on from the step before,
    always the same way: the third one moves it), ``slide`` (5 to 50 mm, no turn),
    ``turn`` (2 to 20 degrees about the hand's origin) or ``both``."""
    hand0 = matrix([rng.uniform(-1, 1), rng.uniform(0.8, 1.6), rng.uniform(-1, 1)], _unit(rng))
    offset = [c * rng.uniform(0.1, 0.6) for c in _direction(rng)]
    anchor0 = matrix([hand0[i][3] + offset[i] for i in range(3)], _unit(rng))
    in_hand = multiply(inverse(hand0), anchor0)
    reference, shown = hand0, anchor0
    drift = [c * 0.0004 for c in _direction(rng)]
    hands: list[Matrix] = []
    for kind in kinds:
        if kind == "drift":
            hand = [row[:] for row in (hands[-1] if hands else hand0)]
            for i in range(3):
                hand[i][3] += drift[i]
        else:
            step, degrees = [0.0, 0.0, 0.0], 0.0
            if kind == "noise":
                step = [c * rng.uniform(0, 0.0002) for c in _direction(rng)]
                degrees = rng.uniform(0, 0.03)
            if kind in ("slide", "both"):
                step = [c * rng.uniform(0.005, 0.05) for c in _direction(rng)]
            if kind in ("turn", "both"):
                degrees = rng.uniform(2, 20)
            hand = _about_hand(reference, step, _direction(rng), degrees)
        hands.append(hand)
        anchor = multiply(hand, in_hand)
        if moved(shown, anchor):
            reference, shown = hand, anchor
    return replay(name, hand0, anchor0, hands)


def vectors() -> dict[str, Any]:
    rng = random.Random(17)
    cases = [
        _case(rng, "held still: commits nothing", ["noise"] * 6),
        _case(rng, "slides only", ["slide", "noise", "slide", "slide", "noise"]),
        _case(rng, "turns about the hand only", ["turn", "noise", "turn", "turn"]),
        _case(rng, "a drift that adds up to a millimetre", ["drift"] * 7),
    ]
    kinds = ["noise", "slide", "turn", "both"]
    for k in range(RANDOM_CASES):
        cases.append(_case(rng, f"random {k}", [rng.choice(kinds) for _ in range(STEPS)]))
    # Out and back: the model ends where it began, but others saw it move: committed.
    hand0 = matrix([0.2, 1.2, -0.4], _unit(rng))
    anchor0 = matrix([0.25, 1.0, -0.7], _unit(rng))
    away = _about_hand(hand0, [0.0, 0.05, 0.0], [0.0, 0.0, 1.0], 10.0)
    cases.append(replay("out and back", hand0, anchor0, [away, hand0]))
    return {
        "about": (
            "holo grab-to-move: anchor = hand * inverse(hand_at_grab) * anchor_at_grab, room "
            "frame, glTF convention; moved: more than still_metres or still_degrees from the "
            "last anchor shown; commit: the last anchor shown, null if none moved; quaternion "
            "signs are not compared. Regenerate with python tests/vectors/grab.py"
        ),
        "still_metres": STILL_METRES,
        "still_degrees": STILL_DEGREES,
        "cases": cases,
    }


def render() -> str:
    return json.dumps(vectors(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    sys.exit(0)
