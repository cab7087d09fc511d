"""Shared fixtures: where the real DICOM data live, the project's own sample study, and a
real `holo serve` process per test module."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from holo.testing import ServeProcess

# The browser tests' fixtures (a web server, the knee, Chromium), for test_web_*.py, and
# a PostgreSQL server per module (`postgres`), for the store's tests.
pytest_plugins = ["webpage", "postgres_server"]

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO / "sample_data"


def _shared_data_root() -> Path:
    return Path(os.environ.get("HOLO_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$HOLO_DATA``). Missing data fail in CI and skip elsewhere."""
    root = _shared_data_root()
    if not (root / "INDEX_real_dicom.md").is_file():
        message = f"shared DICOM data not found at {root}; set HOLO_DATA to its folder"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def sample_generator() -> ModuleType:
    """``sample_data/generate.py`` as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location(
        "holo_sample_data_generate", SAMPLE_DATA / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def sample_ct() -> Path:
    return SAMPLE_DATA / "knee_ct"


@pytest.fixture(scope="session")
def sample_dx() -> Path:
    return SAMPLE_DATA / "knee_dx"


@pytest.fixture(scope="session")
def knee_glb(tmp_path_factory: pytest.TempPathFactory, sample_ct: Path) -> Path:
    """The sample knee converted with the defaults once per run (for tests that need a
    model in a store without converting through the server)."""
    from holo.pipeline import convert

    path = tmp_path_factory.mktemp("knee") / "knee.glb"
    convert(sample_ct, path)
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """A real `holo serve` on a loopback port, shared by one test module."""
    process = ServeProcess(tmp_path_factory.mktemp("data"))
    try:
        yield process
    finally:
        process.stop()
