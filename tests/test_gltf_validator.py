"""The glTF validator harness (``tests/gltf.py``): good GLBs pass, broken ones fail loudly.

These tests prove the harness can fail; the GLB tests of the pipeline itself just call
``assert_valid_glb``. Broken files are made by editing the JSON chunk of a trimesh GLB and
repacking it with correct chunk lengths and padding, so each failure comes from the edit alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trimesh
from gltf import (
    assert_valid_glb,
    ensure_validator,
    error_messages,
    pack_glb,
    split_glb,
    validate_glb,
    validator_dir,
)

Edit = Callable[[dict[str, Any], bytearray], None]


@pytest.fixture(scope="module", autouse=True)
def _validator() -> None:
    ensure_validator()


@pytest.fixture(scope="module")
def sphere() -> trimesh.Trimesh:
    return trimesh.creation.icosphere()  # 642 vertices, 1280 faces


@pytest.fixture
def sphere_glb(tmp_path: Path, sphere: trimesh.Trimesh) -> Path:
    path = tmp_path / "sphere.glb"
    path.write_bytes(sphere.export(file_type="glb"))
    return path


def _edited(source: Path, edit: Edit, name: str) -> Path:
    """Copy of ``source`` with ``edit(document, binary)`` applied, as a well-formed GLB."""
    document, binary = split_glb(source.read_bytes())
    data = bytearray(binary)
    edit(document, data)
    document["buffers"][0]["byteLength"] = len(data)
    path = source.with_name(name)
    path.write_bytes(pack_glb(document, bytes(data)))
    return path


def test_trimesh_glb_passes(sphere_glb: Path, sphere: trimesh.Trimesh) -> None:
    (report,) = assert_valid_glb(sphere_glb)
    pinned = json.loads((validator_dir() / "package.json").read_text())
    # A stale node_modules after a version bump would otherwise go unnoticed.
    assert report["validatorVersion"] == pinned["dependencies"]["gltf-validator"]
    assert report["issues"]["numErrors"] == 0
    info = report["info"]
    assert info["drawCallCount"] == 1
    assert info["totalTriangleCount"] == len(sphere.faces)
    assert info["totalVertexCount"] == len(sphere.vertices)


def test_repacked_glb_passes(sphere_glb: Path) -> None:
    """split_glb + pack_glb alone break nothing, so the errors below come from the edits."""
    assert_valid_glb(_edited(sphere_glb, lambda document, binary: None, "repacked.glb"))


def _buffer_view_too_long(document: dict[str, Any], binary: bytearray) -> None:
    document["bufferViews"][0]["byteLength"] = len(binary) + 64


def _accessor_count_too_large(document: dict[str, Any], binary: bytearray) -> None:
    document["accessors"][document["meshes"][0]["primitives"][0]["indices"]]["count"] *= 2


def _index_out_of_range(document: dict[str, Any], binary: bytearray) -> None:
    # Fewer vertices than the indices refer to; the binary data stay as they were.
    document["accessors"][document["meshes"][0]["primitives"][0]["attributes"]["POSITION"]][
        "count"
    ] = 100


@pytest.mark.parametrize(
    ("edit", "expected_code"),
    [
        pytest.param(_buffer_view_too_long, "BUFFER_VIEW_TOO_LONG", id="bufferview-too-long"),
        pytest.param(_accessor_count_too_large, "ACCESSOR_TOO_LONG", id="accessor-count"),
        pytest.param(_index_out_of_range, "ACCESSOR_INDEX_OOB", id="index-out-of-range"),
    ],
)
def test_broken_glb_fails(sphere_glb: Path, edit: Edit, expected_code: str) -> None:
    broken = _edited(sphere_glb, edit, "broken.glb")
    (report,) = validate_glb(broken)
    assert report["issues"]["numErrors"] > 0
    found = {m["code"] for m in error_messages(report)}
    assert expected_code in found

    with pytest.raises(AssertionError, match=expected_code) as excinfo:
        assert_valid_glb(broken)
    first = error_messages(report)[0]
    assert f"{first['code']} at {first['pointer']}: {first['message']}" in str(excinfo.value)

    # allow_codes tolerates exactly what it names.
    assert_valid_glb(broken, allow_codes=found)
    with pytest.raises(AssertionError):
        assert_valid_glb(broken, allow_codes=found - {expected_code})


@pytest.mark.parametrize(
    "keep",
    [
        pytest.param(lambda n: 0, id="empty"),
        pytest.param(lambda n: 10, id="inside-header"),
        pytest.param(lambda n: 16, id="inside-json-chunk-header"),
        pytest.param(lambda n: 200, id="inside-json"),
        pytest.param(lambda n: n // 2, id="inside-bin"),
        pytest.param(lambda n: n - 1, id="last-byte-missing"),
    ],
)
def test_truncated_glb_gives_errors(sphere_glb: Path, keep: Callable[[int], int]) -> None:
    data = sphere_glb.read_bytes()
    truncated = sphere_glb.with_name("truncated.glb")
    truncated.write_bytes(data[: keep(len(data))])
    (report,) = validate_glb(truncated)
    assert report["issues"]["numErrors"] > 0, report["issues"]["messages"]
    with pytest.raises(AssertionError, match="glTF validator error"):
        assert_valid_glb(truncated)


def test_one_run_reports_files_in_order(sphere_glb: Path) -> None:
    broken = _edited(sphere_glb, _buffer_view_too_long, "broken.glb")
    reports = validate_glb(sphere_glb, broken, sphere_glb)
    assert [r["uri"] for r in reports] == [str(sphere_glb), str(broken), str(sphere_glb)]
    assert [r["issues"]["numErrors"] > 0 for r in reports] == [False, True, False]
    with pytest.raises(AssertionError, match=re.escape(str(broken))) as excinfo:
        assert_valid_glb(sphere_glb, broken)
    assert "sphere.glb" not in str(excinfo.value)


def test_unreadable_file_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="cannot read"):
        validate_glb(tmp_path / "missing.glb")


# --- Extensions the exporter may use -------------------------------------------------------
# The validator checks KHR_materials_unlit and KHR_mesh_quantization. It does not know
# KHR_draco_mesh_compression, EXT_meshopt_compression or MSFT_lod: it reports each as an
# UNSUPPORTED_EXTENSION info and never decodes their payloads, so the compressed payloads below
# are placeholders. README.md records what it says about files made by real encoders.


def _append(binary: bytearray, payload: bytes) -> int:
    """Append ``payload`` 4-byte aligned (vertex attributes need it); return its offset."""
    binary.extend(b"\0" * (-len(binary) % 4))
    offset = len(binary)
    binary.extend(payload)
    return offset


def _primitive(document: dict[str, Any]) -> dict[str, Any]:
    primitive: dict[str, Any] = document["meshes"][0]["primitives"][0]
    return primitive


def _use(document: dict[str, Any], name: str, *, required: bool = False) -> None:
    document.setdefault("extensionsUsed", []).append(name)
    if required:
        document.setdefault("extensionsRequired", []).append(name)


def _unlit(document: dict[str, Any], binary: bytearray) -> None:
    document["materials"] = [{"extensions": {"KHR_materials_unlit": {}}}]
    _primitive(document)["material"] = 0
    _use(document, "KHR_materials_unlit")


def _quantized(document: dict[str, Any], binary: bytearray) -> None:
    # POSITION as non-normalized int16 (allowed only with the extension), the node scaling it
    # back to the unit sphere. Rows padded to 8 bytes: attribute strides must be multiples of 4.
    accessor = document["accessors"][_primitive(document)["attributes"]["POSITION"]]
    view = document["bufferViews"][accessor["bufferView"]]
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    positions = np.frombuffer(binary, "<f4", accessor["count"] * 3, start).reshape(-1, 3).copy()
    rows = np.zeros((len(positions), 4), "<i2")
    rows[:, :3] = np.round(positions * 32767)
    offset = _append(binary, rows.tobytes())
    document["bufferViews"].append(
        {"buffer": 0, "byteOffset": offset, "byteLength": rows.nbytes, "byteStride": 8}
    )
    document["accessors"].append(
        {
            "bufferView": len(document["bufferViews"]) - 1,
            "componentType": 5122,  # SHORT
            "count": len(rows),
            "type": "VEC3",
            "min": rows[:, :3].min(axis=0).tolist(),
            "max": rows[:, :3].max(axis=0).tolist(),
        }
    )
    _primitive(document)["attributes"]["POSITION"] = len(document["accessors"]) - 1
    for node in document["nodes"]:
        node["scale"] = [1 / 32767] * 3
    _use(document, "KHR_mesh_quantization", required=True)


def _draco(document: dict[str, Any], binary: bytearray) -> None:
    # Optional Draco: the uncompressed accessors stay as the fallback.
    offset = _append(binary, bytes(64))
    document["bufferViews"].append({"buffer": 0, "byteOffset": offset, "byteLength": 64})
    _primitive(document)["extensions"] = {
        "KHR_draco_mesh_compression": {
            "bufferView": len(document["bufferViews"]) - 1,
            "attributes": {"POSITION": 0},
        }
    }
    _use(document, "KHR_draco_mesh_compression")


def _meshopt(document: dict[str, Any], binary: bytearray) -> None:
    # Optional meshopt on the POSITION view: its plain data stay as the fallback.
    accessor = document["accessors"][_primitive(document)["attributes"]["POSITION"]]
    offset = _append(binary, bytes(64))
    document["bufferViews"][accessor["bufferView"]]["extensions"] = {
        "EXT_meshopt_compression": {
            "buffer": 0,
            "byteOffset": offset,
            "byteLength": 64,
            "byteStride": 12,
            "count": accessor["count"],
            "mode": "ATTRIBUTES",
        }
    }
    _use(document, "EXT_meshopt_compression")


def _lod(document: dict[str, Any], binary: bytearray) -> None:
    # The coarser level is a node outside the scene, reached only through MSFT_lod.
    document["nodes"].append({"mesh": document["nodes"][0]["mesh"]})
    document["nodes"][0]["extensions"] = {"MSFT_lod": {"ids": [len(document["nodes"]) - 1]}}
    document["nodes"][0]["extras"] = {"MSFT_screencoverage": [0.5, 0.1]}
    _use(document, "MSFT_lod")


@pytest.mark.parametrize(
    ("edit", "extension", "supported"),
    [
        pytest.param(_unlit, "KHR_materials_unlit", True, id="unlit"),
        pytest.param(_quantized, "KHR_mesh_quantization", True, id="quantization"),
        pytest.param(_draco, "KHR_draco_mesh_compression", False, id="draco"),
        pytest.param(_meshopt, "EXT_meshopt_compression", False, id="meshopt"),
        pytest.param(_lod, "MSFT_lod", False, id="lod"),
    ],
)
def test_extension_is_no_error(
    sphere_glb: Path, edit: Edit, extension: str, supported: bool
) -> None:
    (report,) = assert_valid_glb(_edited(sphere_glb, edit, f"{extension}.glb"))
    assert extension in report["info"]["extensionsUsed"]
    unsupported = [m for m in report["issues"]["messages"] if m["code"] == "UNSUPPORTED_EXTENSION"]
    assert bool(unsupported) is not supported
    assert all(m["severity"] == 2 for m in unsupported)  # information
    assert report["issues"]["numWarnings"] == 0
