"""``pip install holo`` without extras is a working client SDK and CLI client.

A fresh virtual environment gets only the base package (grpcio, protobuf, numpy: what
PyPI resolves for it); from there, against a real server started here, a script joins a
session, loads and moves a model and fetches it (the SHA-256 checked), and the features
that need an extra fail in one line naming it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

from holo.testing import TestServer

REPO = Path(__file__).resolve().parents[1]
EXTRA_LIBRARIES = ("SimpleITK", "vtkmodules", "av", "trimesh", "pydicom", "redis")

SCRIPT = textwrap.dedent(
    """
    import asyncio, hashlib, importlib.util, json, subprocess, sys

    address, presenter_token, observer_token, model_id, libraries = sys.argv[1:6]
    report = {"missing": [m for m in libraries.split(",") if importlib.util.find_spec(m) is None]}

    from holo.client import HoloClient, SessionClient
    from holo.session import Pose

    async def session() -> None:
        presenter = SessionClient(address, token=presenter_token, insecure=True)
        info = await presenter.create_session()
        await presenter.join(info.session_id.value)
        await presenter.load_model(model_id, Pose.IDENTITY)
        observer = SessionClient(address, token=observer_token, insecure=True)
        await observer.join(info.session_id.value)
        moved = Pose((0.1, 1.2, -0.4), (0.0, 0.0, 0.0, 1.0))
        seq = await presenter.commit_anchor(model_id, moved)
        await observer.wait_seq(seq)
        report["observer_sees"] = list(observer.state.models[model_id].anchor_pose.position)
        await observer.close()
        await presenter.close()

    asyncio.run(session())
    with HoloClient(address, token=observer_token, insecure=True) as client:
        fetched = client.fetch_model(model_id)
    report["sha256_ok"] = hashlib.sha256(fetched.data).hexdigest() == fetched.manifest.sha256
    import holo.testing.simulate  # holo simulate: a client command, in the lean install too
    report["simulator"] = holo.testing.simulate.OBSERVERS_PER_PROCESS
    try:
        import holo.imaging  # noqa: F401
    except ImportError as err:  # holo.errors.ExtraError
        report["import_imaging"] = str(err)
    import holo
    try:
        holo.convert
    except ImportError as err:
        report["holo_convert"] = str(err)
    cli = subprocess.run(
        [sys.executable, "-m", "holo.cli", "convert", "nowhere", "-o", "x.glb"],
        capture_output=True, text=True,
    )
    report["cli"] = [cli.returncode, cli.stderr]
    print(json.dumps(report))
    """
)


@pytest.mark.slow
def test_the_base_package_alone_joins_a_session_and_fetches_a_model(
    tmp_path: Path, knee_glb: Path
) -> None:
    # The package's sources, copied: building in the repository would leave build/ there.
    source = tmp_path / "source"
    for part in ("holo", "segmentation"):
        shutil.copytree(REPO / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / part, source / part)
    env_dir = tmp_path / "lean"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    with TestServer(tmp_path / "store") as server:
        model_id = server.publish_model("case-lean", knee_glb)
        run = subprocess.run(
            [
                str(python),
                "-c",
                SCRIPT,
                server.address,
                server.token("presenter", "case-lean"),
                server.token("observer", "case-lean"),
                model_id,
                ",".join(EXTRA_LIBRARIES),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,  # not the repository: the installed package is what runs
        )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["missing"] == list(EXTRA_LIBRARIES)  # nothing of the extras came along
    assert report["observer_sees"] == [0.1, 1.2, -0.4]
    assert report["sha256_ok"] is True and report["simulator"] > 0
    for key in ("import_imaging", "holo_convert"):
        assert "'convert' extra" in report[key] and "pip install 'holo[convert]'" in report[key]
    status, stderr = report["cli"]
    assert status == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("holo: error:") and "'convert' extra" in stderr
    assert sys.prefix not in report["import_imaging"]  # a message, not a traceback path
