"""The session fold is the same in every client: shared vectors (tests/vectors/).

The vectors are wire messages (a snapshot, then events) and the state they fold to. The
Python SDK's fold and the web page's (holo/web/src/fold.js, run by node's test runner)
must both give that state. The same node run replays the timeline vectors
(tests/vectors/timeline.json, checked current by tests/test_unity_vectors.py) through the
page's timeline (holo/web/test/timeline.test.mjs): its answers, interpolated values
included, must be the Python SDK's exactly.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from holo.session.state import apply
from holo.v1 import session_pb2
from holo.wire.session import event_from_message, state_from_snapshot

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors" / "session_fold.json"
WEB = ROOT / "holo" / "web"


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("session_fold", VECTORS.with_suffix(".py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_vectors_are_current() -> None:
    assert VECTORS.read_text(encoding="utf-8") == _generator().render(), (
        "tests/vectors/session_fold.json is stale: run python tests/vectors/session_fold.py"
    )


def test_the_python_fold_gives_the_expected_states() -> None:
    scenarios = json.loads(VECTORS.read_text(encoding="utf-8"))["scenarios"]
    assert len(scenarios) >= 10
    for scenario in scenarios:
        snapshot = session_pb2.SessionSnapshot.FromString(base64.b64decode(scenario["snapshot"]))
        state = state_from_snapshot(snapshot)
        for raw in scenario["events"]:
            event = session_pb2.SessionEvent.FromString(base64.b64decode(raw))
            apply(state, event_from_message(event))
        assert json.loads(json.dumps(state.public_dict())) == scenario["expected"]


def test_the_web_page_fold_gives_the_expected_states() -> None:
    node = shutil.which("node")
    if node is None or not (WEB / "node_modules").is_dir():
        pytest.fail("node and holo/web/node_modules are needed: run `make setup`")
    result = subprocess.run(
        [node, "--test", "test/"], cwd=WEB, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout and "# pass 0" not in result.stdout
