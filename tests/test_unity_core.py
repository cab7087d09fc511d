"""The Unity bridge's plain C# core, compiled with Debian's mono ``mcs`` and tested with its
NUnit 2.6 ``nunit-console`` (unity_bridge/README.md, "What is compiled and tested here").

The core (``unity_bridge/Core``) is compiled on its own first, against nothing but the
base class library, so it cannot lean on the tests, Unity or protobuf; then with the NUnit
tests (``unity_bridge/Tests``), which read the shared vectors from ``tests/vectors``
(``HOLO_VECTORS``). Every test must run: none failed, none ignored, and as many ran as the
sources declare, so a test cannot drop out unseen. The levels of detail the core cuts out
of the sample knee (``HOLO_UNITY_OUT``) must pass the Khronos glTF validator and hold what
holo's manifest says of each level. The package README's list of what was compiled here
and what was not is checked against the files on disk.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import unity_metas
from gltf import assert_valid_glb

from holo.export.manifest import model_manifest

ROOT = Path(__file__).resolve().parents[1]
BRIDGE = ROOT / "unity_bridge"
VECTORS = ROOT / "tests" / "vectors"
NUNIT = Path("/usr/lib/cli/nunit.framework-2.6.3/nunit.framework.dll")
# C# 7.2: what Debian's mcs compiles, and older than what Unity 2022.3 accepts (9.0).
LANGVERSION = "7.2"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: `make setup` installs mono-mcs and nunit-console")
    return path


def _mcs(out: Path, sources: list[Path], references: list[Path]) -> None:
    command = [
        _tool("mcs"),
        f"-langversion:{LANGVERSION}",
        "-target:library",
        "-warnaserror+",
        "-nowarn:1591",
        f"-out:{out}",
        *(f"-r:{r}" for r in references),
        *map(str, sources),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def _declared_tests(sources: list[Path]) -> int:
    """How many tests the sources declare: each [Test], and each [TestCase(...)]."""
    text = "\n".join(s.read_text(encoding="utf-8") for s in sources)
    return len(re.findall(r"\[Test\]", text)) + len(re.findall(r"\[TestCase\(", text))


def test_the_core_compiles_on_its_own_without_unity_or_protobuf(tmp_path: Path) -> None:
    core = sorted((BRIDGE / "Core").glob("*.cs"))
    assert len(core) >= 10
    for source in core:
        text = source.read_text(encoding="utf-8")
        assert not re.search(r"^\s*using\s+(UnityEngine|Google\.Protobuf|Grpc)", text, re.M), source
    _mcs(tmp_path / "Holo.Bridge.Core.dll", core, [])


@dataclass
class NunitRun:
    results: ET.Element
    stdout: str
    returncode: int
    levels: Path  # where the C# tests wrote the knee's levels (HOLO_UNITY_OUT)


@pytest.fixture(scope="module")
def nunit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NunitRun]:
    """The core and its tests compiled, and nunit-console run once for the module."""
    tmp = tmp_path_factory.mktemp("unity_core")
    core = sorted((BRIDGE / "Core").glob("*.cs"))
    tests = sorted((BRIDGE / "Tests").glob("*.cs"))
    if not NUNIT.is_file():
        pytest.fail(f"{NUNIT} not found: `make setup` installs libnunit-framework2.6.3-cil")
    assembly = tmp / "Holo.Bridge.Core.Tests.dll"
    _mcs(assembly, core + tests, [NUNIT])
    result_xml = tmp / "nunit.xml"
    levels = tmp / "levels"
    levels.mkdir()
    env = {**os.environ, "HOLO_VECTORS": str(VECTORS), "HOLO_UNITY_OUT": str(levels)}
    run = subprocess.run(
        [_tool("nunit-console"), "-nologo", "-noshadow", f"-xml={result_xml}", str(assembly)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp,
        env=env,
    )
    assert result_xml.is_file(), run.stdout[-3000:] + run.stderr[-2000:]
    yield NunitRun(ET.parse(result_xml).getroot(), run.stdout, run.returncode, levels)


def test_the_nunit_tests_pass_against_the_shared_vectors(nunit: NunitRun) -> None:
    results = nunit.results
    counts = {k: int(results.get(k, "0")) for k in ("total", "errors", "failures", "ignored")}
    counts["not-run"] = int(results.get("not-run", "0"))
    failed = [
        f"{case.get('name')}: {(case.findtext('.//message') or '').strip()[:500]}"
        for case in results.iter("test-case")
        if case.get("success") == "False" or case.get("executed") == "False"
    ]
    assert nunit.returncode == 0 and not failed, "\n".join(failed) or nunit.stdout[-3000:]
    assert counts["errors"] == counts["failures"] == counts["ignored"] == 0, counts
    assert counts["not-run"] == 0, counts
    tests = sorted((BRIDGE / "Tests").glob("*.cs"))
    assert counts["total"] == _declared_tests(tests), (counts, "tests declared in the sources")
    names = [case.get("name", "") for case in results.iter("test-case")]
    vector_tests = [n for n in names if ".SharedVectors" in n]
    # Each vector file is read by at least one test that ran (HOLO_VECTORS was honoured).
    assert len(vector_tests) >= 6, vector_tests
    for vector in VECTORS.glob("*.json"):
        used = any(vector.name in s.read_text(encoding="utf-8") for s in tests)
        assert used, f"no C# test reads {vector.name}"


def test_the_levels_the_core_cuts_are_valid_gltf_holding_their_level(nunit: NunitRun) -> None:
    vector = json.loads((VECTORS / "model_stream.json").read_text(encoding="utf-8"))
    whole = model_manifest(base64.b64decode(vector["glb_base64"]))
    paths = [nunit.levels / f"knee_level{k}.glb" for k in range(len(whole["lods"]))]
    assert all(p.is_file() for p in paths), sorted(nunit.levels.iterdir())
    assert_valid_glb(*paths)
    for k, path in enumerate(paths):
        level = model_manifest(path.read_bytes())
        assert [lod["triangles"] for lod in level["lods"]] == [whole["lods"][k]["triangles"]]
        assert level["structures"] == [
            {"name": s["name"], "triangles": [s["triangles"][k]]} for s in whole["structures"]
        ]
        assert level["frame_of_reference_uid"] == whole["frame_of_reference_uid"]
        assert level["mesh_compressions"] == whole["mesh_compressions"]


def _listed(readme: str, heading: str) -> set[str]:
    """The file paths listed (as `code` bullets) under a README heading."""
    section = readme.split(heading, 1)[1]
    section = re.split(r"\n#{2,4} ", section, maxsplit=1)[0]
    return set(re.findall(r"^- `([^`]+)`", section, flags=re.MULTILINE))


def test_the_readme_lists_what_was_and_was_not_compiled_here() -> None:
    readme = (BRIDGE / "README.md").read_text(encoding="utf-8")
    compiled = _listed(readme, "### Compiled and tested here")
    not_compiled = _listed(readme, "### Not compiled here")
    on_disk = {
        p.relative_to(BRIDGE).as_posix()
        for p in BRIDGE.rglob("*.cs")
        if not p.relative_to(BRIDGE).as_posix().startswith("Runtime/Generated/")
    }
    tested = {p for p in on_disk if p.startswith(("Core/", "Tests/"))}
    assert compiled == tested, (compiled ^ tested, "the compiled list is not the Core and Tests")
    untested = (on_disk - tested) | {"Runtime/Generated/*.cs"}
    assert not_compiled == untested, (not_compiled ^ untested, "the not-compiled list")


def test_the_unity_layer_parses_though_it_is_not_compiled_here() -> None:
    """Runtime/ and the sample need Unity, glTFast, gRPC and protobuf, none of which is on
    these machines: mcs checks their syntax only (C# 7.2), so a typo cannot ship unseen.
    Names and types are not checked (README.md, "Not compiled here")."""
    sources = sorted((BRIDGE / "Runtime").glob("*.cs")) + sorted(BRIDGE.glob("Samples~/*/*.cs"))
    assert len(sources) >= 8
    result = subprocess.run(
        [_tool("mcs"), "--parse", f"-langversion:{LANGVERSION}", *map(str, sources)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_package_asset_has_its_meta_file() -> None:
    """Unity ignores an asset without a .meta in a package installed from git."""
    metas = unity_metas
    expected = {p.with_name(p.name + ".meta") for p in metas.assets()}
    present = {p for p in BRIDGE.rglob("*.meta") if "~" not in p.relative_to(BRIDGE).as_posix()}
    assert expected == present, (
        sorted(str(p.relative_to(BRIDGE)) for p in expected ^ present),
        "run python tests/unity_metas.py (and delete the metas of removed files)",
    )
    guids = [re.search(r"^guid: (\w+)$", p.read_text(), re.M) for p in present]
    assert all(guids) and len({g.group(1) for g in guids if g}) == len(guids)
    for asset in metas.assets():
        meta = asset.with_name(asset.name + ".meta")
        assert meta.read_text(encoding="utf-8") == metas.meta_text(asset), meta
