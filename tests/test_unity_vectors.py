"""The shared vectors the Unity bridge is tested against (tests/vectors/), on the Python side.

Each file is what its generator writes now (regenerated and compared, so a vector changes
only through its generator), and what the Python implementation gives: the generators run
the SDK's own ClockSync, SessionTimeline, SessionClient and fetch_model, and a real server.
The checks here add what a generator does not restate: the plain JSON forms the C# core
reads are exactly what the protobuf bytes beside them decode to; the model stream is the
file the manifest describes, cut where the server cuts; the Unity poses are glTFast's rule.
The C# side of the same files: tests/test_unity_core.py.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from holo.export.manifest import model_manifest
from holo.v1 import session_pb2
from holo.wire.session import event_from_message

VECTORS = Path(__file__).resolve().parent / "vectors"
GENERATED = ["frames", "clock_filter", "timeline", "model_stream", "session_stream", "grab"]


def _generator(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"holo_vectors_{name}", VECTORS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(name: str) -> Any:
    return json.loads((VECTORS / f"{name}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", GENERATED)
def test_the_committed_vectors_are_current(name: str) -> None:
    assert (VECTORS / f"{name}.json").read_text(encoding="utf-8") == _generator(name).render(), (
        f"tests/vectors/{name}.json is stale: run python tests/vectors/{name}.py"
    )


def test_the_fold_vectors_plain_forms_are_what_the_bytes_decode_to() -> None:
    fold = _generator("session_fold")
    scenarios = _load("session_fold")["scenarios"]
    for scenario in scenarios:
        snapshot = session_pb2.SessionSnapshot.FromString(base64.b64decode(scenario["snapshot"]))
        assert scenario["snapshot_plain"] == json.loads(json.dumps(fold.plain_snapshot(snapshot)))
        events = [
            fold.plain_event(event_from_message(session_pb2.SessionEvent.FromString(raw)))
            for raw in map(base64.b64decode, scenario["events"])
        ]
        assert scenario["events_plain"] == json.loads(json.dumps(events))
    folded = {kind for scenario in scenarios for kind in scenario["kinds"]}
    assert len(folded) == 12, "every kind of durable event is folded by a client"


def test_the_stream_vectors_plain_forms_are_what_the_bytes_decode_to() -> None:
    stream = _generator("session_stream")
    vectors = _load("session_stream")
    scenarios = [vectors["recorded"], *vectors["perturbed"]]
    outcomes = set()
    for scenario in scenarios:
        for step in scenario["steps"]:
            if "message" not in step:
                continue
            message = session_pb2.SessionMessage.FromString(base64.b64decode(step["message"]))
            assert step["plain"] == json.loads(json.dumps(stream.plain_message(message)))
            outcomes.add(step["expect"]["outcome"])
    assert outcomes == {"accepted", "applied", "repeat", "gap", "resync"}
    # Nothing of the server's random ids or clock is left in the file.
    text = (VECTORS / "session_stream.json").read_text(encoding="utf-8")
    assert '"p_' not in text


def test_the_model_stream_is_the_file_its_manifest_describes() -> None:
    vectors = _load("model_stream")
    glb = base64.b64decode(vectors["glb_base64"])
    manifest = vectors["manifest"]
    fresh = model_manifest(glb)
    assert manifest["size_bytes"] == fresh["size_bytes"] == len(glb)
    assert manifest["sha256"] == fresh["sha256"] == hashlib.sha256(glb).hexdigest()
    keys = ("index", "name", "triangles", "bytes", "complete_at_bytes", "prefix_sha256")
    assert manifest["lods"] == [{k: lod[k] for k in keys} for lod in fresh["lods"]]
    boundaries = {lod["complete_at_bytes"] for lod in manifest["lods"]}
    streams = vectors["streams"]
    for name in ("whole", "resumed"):
        stream = streams[name]
        position = stream["offset"]
        for offset, length in stream["chunks"]:
            assert offset == position and 0 < length <= vectors["chunk_bytes"], name
            # The server cuts at every level boundary: a level is complete with a message.
            assert not any(offset < b < offset + length for b in boundaries), name
            position += length
        assert position == len(glb), name
    assert streams["cached"]["chunks"] == [] and streams["cached"]["manifests"] == 1
    ends = [offset + length for offset, length in streams["whole"]["chunks"]]
    assert [[k, lod["complete_at_bytes"]] for k, lod in enumerate(manifest["lods"])] == vectors[
        "python_levels"
    ]
    assert set(boundaries) <= set(ends)
    assert len(vectors["glb_base64"]) < 3_000_000


def test_the_unity_poses_are_gltfasts_rule() -> None:
    vectors = _load("frames")
    for case in vectors["poses"]:
        (px, py, pz), (x, y, z, w) = case["gltf"]["position"], case["gltf"]["rotation"]
        assert case["unity"]["position"] == [-px, py, pz]
        np.testing.assert_allclose(case["unity"]["rotation"], [x, -y, -z, w], atol=1e-12)
    for ray in vectors["rays"]:
        (ox, oy, oz), (dx, dy, dz) = ray["gltf"]["origin"], ray["gltf"]["direction"]
        assert ray["unity"] == {"origin": [-ox, oy, oz], "direction": [-dx, dy, dz]}


def _rigid(pose: dict[str, list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """A pose's rotation matrix (from its quaternion x, y, z, w) and translation."""
    x, y, z, w = pose["rotation"]
    assert abs(x * x + y * y + z * z + w * w - 1) < 1e-12
    r = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    return r, np.array(pose["position"])


def _apart(a: dict[str, list[float]], b: dict[str, list[float]]) -> tuple[float, float]:
    """Metres between two poses' origins and degrees between their rotations."""
    (ra, ta), (rb, tb) = _rigid(a), _rigid(b)
    cos = np.clip((np.trace(ra.T @ rb) - 1) / 2, -1, 1)
    return float(np.linalg.norm(tb - ta)), float(np.degrees(np.arccos(cos)))


def test_the_grab_vectors_hold_the_model_rigidly_on_the_hand() -> None:
    """Whatever the hand does, points of the model keep their place in the hand's frame
    (the model rides the hand rigidly); a step is moved exactly when it is more than 1 mm
    or 0.2 degrees from the last anchor shown; the commit is the last anchor shown."""
    vectors = _load("grab")
    assert (vectors["still_metres"], vectors["still_degrees"]) == (0.001, 0.2)
    points = np.random.default_rng(17).uniform(-0.2, 0.2, size=(3, 8))  # model frame, metres
    names = set()
    for case in vectors["cases"]:
        names.add(case["name"])
        r_hand, t_hand = _rigid(case["hand_at_grab"])
        r_anchor, t_anchor = _rigid(case["anchor_at_grab"])
        in_hand = r_hand.T @ (r_anchor @ points + t_anchor[:, None] - t_hand[:, None])
        shown = case["anchor_at_grab"]
        for k, step in enumerate(case["steps"]):
            r_hand, t_hand = _rigid(step["hand"])
            r_anchor, t_anchor = _rigid(step["anchor"])
            seen = r_hand.T @ (r_anchor @ points + t_anchor[:, None] - t_hand[:, None])
            np.testing.assert_allclose(seen, in_hand, atol=1e-12, err_msg=f"{case['name']} {k}")
            metres, degrees = _apart(shown, step["anchor"])
            assert step["moved"] == (metres > 0.001 or degrees > 0.2), (case["name"], k)
            if step["moved"]:
                shown = step["anchor"]
        moved = any(step["moved"] for step in case["steps"])
        assert case["commit"] == (shown if moved else None), case["name"]
    assert "held still: commits nothing" in names and "out and back" in names
    assert sum(case["commit"] is None for case in vectors["cases"]) == 1
