"""What every harness shares: where seed data live, scratch space, and how a harness starts.

A harness is a script: ``python fuzz/fuzz_glb.py [libFuzzer options] CORPUS [SEEDS...]``
fuzzes (atheris, coverage-guided), ``python fuzz/fuzz_glb.py --seeds DIR`` writes its seed
corpus to ``DIR`` and exits. :mod:`run` does both with the options each target needs.

A crash is any exception a target's docstring does not name (atheris reports it with the
input that raised it), a call slower than libFuzzer's ``-timeout``, or memory past
``-rss_limit_mb``. Each harness catches exactly the documented errors and nothing else.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

__all__ = ["REPO", "fuzz", "link_seed", "scratch_folder", "shared_data"]

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path | None:
    """``../shared/data`` (or ``$HOLO_DATA``, as tests/conftest.py reads it); None if absent.

    Seeds are linked from there, never copied into the repository."""
    root = Path(os.environ.get("HOLO_DATA", REPO.parent / "shared" / "data")).resolve()
    return root if (root / "INDEX_real_dicom.md").is_file() else None


def link_seed(folder: Path, source: Path, name: str | None = None) -> None:
    """Put ``source`` in the seed folder ``folder`` as a symbolic link (libFuzzer follows it)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or source.name)
    if not target.exists():
        target.symlink_to(source.resolve())


def scratch_folder() -> Path:
    """A private folder for the files a harness writes per input: in RAM (/dev/shm) where
    there is one, removed at exit."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    folder = Path(tempfile.mkdtemp(prefix="holo-fuzz-", dir=base))
    import atexit

    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def fuzz(test_one_input: Callable[[bytes], None], write_seeds: Callable[[Path], None]) -> None:
    """The harness's ``main``: ``--seeds DIR`` writes the seeds, anything else fuzzes."""
    if len(sys.argv) == 3 and sys.argv[1] == "--seeds":
        folder = Path(sys.argv[2])
        folder.mkdir(parents=True, exist_ok=True)
        write_seeds(folder)
        return
    # holo logs refusals (rate-limited) and pydicom warns about damaged files: expected here.
    logging.disable(logging.CRITICAL)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
