"""Each fuzz harness (fuzz/) for a short fixed budget: a crash fails the test.

CI's budget is :data:`SECONDS` per harness (under two minutes in all, with start-up);
``make fuzz`` runs them for longer (``FUZZ_SECONDS``, default 600 each).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECONDS = 15
TARGETS = ("dicom", "glb", "token", "zip", "rpc", "igtl")


@pytest.fixture(autouse=True)
def _atheris() -> None:
    if importlib.util.find_spec("atheris") is None:
        message = "atheris is not installed (the dev extra installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.parametrize("target", TARGETS)
def test_harness_finds_no_crash(target: str, tmp_path: Path) -> None:
    # Corpus and crash artifacts go to tmp_path, never into the tree. A fixed seed: the
    # same mutations every run (the number of runs still depends on the machine's speed).
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "fuzz" / "run.py"),
            "--seconds",
            str(SECONDS),
            "--seed",
            "1",
            "--work",
            str(tmp_path),
            target,
        ],
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
        check=False,
    )
    assert done.returncode == 0, f"{target} crashed:\n{done.stdout}\n{done.stderr[-4000:]}"
    assert f"{target}: " in done.stdout and ", ok" in done.stdout, done.stdout


def test_every_harness_is_run_here() -> None:
    sys.path.insert(0, str(REPO / "fuzz"))
    try:
        from run import TARGETS as ALL
    finally:
        sys.path.remove(str(REPO / "fuzz"))
    assert set(ALL) == set(TARGETS)
