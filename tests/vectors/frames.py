"""Shared test vectors for the glTF -> Unity frame conversion of poses and rays, for the
Unity bridge (unity_bridge/Core/Frames.cs).

Unity is left-handed; glTFast imports a glTF model by mirroring X (ARCHITECTURE.md,
"Coordinate frames"). The bridge converts poses with the same rule. The expected Unity
values here are not that rule typed again: they come from the mirror itself. With
M = diag(-1, 1, 1), a glTF pose (rotation matrix R, translation t) is the Unity pose
(M R M, M t); its quaternion is read back from the matrix M R M (the sign chosen with w
of the glTF quaternion's sign: mirroring keeps the angle). So a test that finds these
values with Frames.ToUnity has checked the rule against the geometry. Each case also
carries a point of the model frame and where the pose puts it, mirrored: where Unity must
show it (``world_unity``), whatever the quaternion convention.

``python tests/vectors/frames.py`` writes ``frames.json`` (seeded random poses and rays,
plus the identity, half turns about each axis and a negative w).
``tests/test_unity_vectors.py`` checks the file is current and that the values match
glTFast's rule; the C# tests convert them (FramesVectorTests.cs).
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

OUT = Path(__file__).with_name("frames.json")
MIRROR = np.diag([-1.0, 1.0, 1.0])
POSES = 40
RAYS = 20


def rotation_matrix(q: tuple[float, float, float, float]) -> npt.NDArray[np.float64]:
    """The rotation matrix of unit quaternion (x, y, z, w), acting on column vectors."""
    x, y, z, w = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def quaternion(m: npt.NDArray[np.float64], w_sign: float) -> list[float]:
    """The unit quaternion (x, y, z, w) of rotation matrix ``m`` (Shepperd's method: from
    the largest of the four diagonal combinations), with w's sign ``w_sign`` (or x's, etc.,
    when w is 0)."""
    trace = float(np.trace(m))
    candidates = [trace, m[0, 0], m[1, 1], m[2, 2]]
    k = int(np.argmax(candidates))
    if k == 0:
        s = math.sqrt(1.0 + trace) * 2
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4]
    elif k == 1:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif k == 2:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s]
    lead = next((c for c in reversed(q) if abs(c) > 1e-12), 1.0)  # w first, then z, y, x
    return [float(c) for c in q] if math.copysign(1, lead) == w_sign else [-float(c) for c in q]


def _unit(rng: random.Random) -> tuple[float, float, float, float]:
    q = [rng.gauss(0, 1) for _ in range(4)]
    norm = math.sqrt(sum(c * c for c in q))
    x, y, z, w = (c / norm for c in q)
    return (x, y, z, w)


def pose_case(
    position: list[float], rotation: tuple[float, float, float, float], point: list[float]
) -> dict[str, Any]:
    r = rotation_matrix(rotation)
    unity_r = MIRROR @ r @ MIRROR
    # The sign to give the result: that of the glTF quaternion's last non-zero component
    # in the order w, z, y, x (w is kept by the mirror; z and y flip; x is kept).
    lead = next(((i, c) for i, c in reversed(list(enumerate(rotation))) if abs(c) > 1e-12))
    sign = math.copysign(1, lead[1]) * (-1 if lead[0] in (1, 2) else 1)
    world = r @ np.array(point) + np.array(position)
    return {
        "gltf": {"position": position, "rotation": list(rotation)},
        "unity": {
            "position": (MIRROR @ np.array(position)).tolist(),
            "rotation": quaternion(unity_r, sign),
        },
        "point_gltf": point,
        "world_unity": (MIRROR @ world).tolist(),
    }


def vectors() -> dict[str, Any]:
    rng = random.Random(17)
    half = math.sqrt(0.5)
    fixed: list[tuple[float, float, float, float]] = [
        (0.0, 0.0, 0.0, 1.0),
        (1.0, 0.0, 0.0, 0.0),  # half turns about X, Y, Z
        (0.0, 1.0, 0.0, 0.0),
        (0.0, 0.0, 1.0, 0.0),
        (0.0, half, 0.0, half),  # a quarter turn about +Y
        (0.1, -0.2, 0.3, -0.9273618495495703),  # negative w (unit to the last bit)
    ]
    rotations = fixed + [_unit(rng) for _ in range(POSES)]
    poses = []
    for rotation in rotations:
        position = [rng.uniform(-2, 2), rng.uniform(0, 2), rng.uniform(-2, 2)]
        point = [rng.uniform(-0.3, 0.3) for _ in range(3)]
        poses.append(pose_case(position, rotation, point))
    rays = []
    for _ in range(RAYS):
        origin = [rng.uniform(-2, 2), rng.uniform(0, 2), rng.uniform(-2, 2)]
        direction = [rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(-1, 1)]
        rays.append(
            {
                "gltf": {"origin": origin, "direction": direction},
                "unity": {
                    "origin": (MIRROR @ np.array(origin)).tolist(),
                    "direction": (MIRROR @ np.array(direction)).tolist(),
                },
            }
        )
    return {
        "about": (
            "holo glTF -> Unity pose and ray conversions (the mirror M = diag(-1, 1, 1)); "
            "regenerate with python tests/vectors/frames.py"
        ),
        "poses": poses,
        "rays": rays,
    }


def render() -> str:
    return json.dumps(vectors(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    sys.exit(0)
