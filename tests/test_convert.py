"""Study -> GLB: mesh accuracy on the analytic phantom, real CT, glTF validity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from gltf import assert_valid_glb, ensure_validator

from holo.cli import main
from holo.pipeline import convert


@pytest.fixture(scope="module")
def truth(sample_ct: Path) -> dict:
    return json.loads((sample_ct.parent / "truth.json").read_text())


@pytest.fixture(scope="module")
def knee_glb(sample_ct: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("knee") / "knee.glb"
    report = convert(sample_ct, out)
    return out, report.as_dict()


def test_phantom_bones_match_the_analytic_truth(knee_glb: tuple[Path, dict], truth: dict) -> None:
    _, report = knee_glb
    structures = report["structures"]
    assert len(structures) == 3  # femur, tibia, patella: separate bones
    # Labels are ordered by size, as the truth's bones are: femur > tibia > patella.
    expected = sorted(truth["bones"].values(), key=lambda b: -b["outer_volume_mm3"])
    for got, want in zip(structures, expected, strict=True):
        assert got["watertight"]
        assert got["volume_mm3"] == pytest.approx(want["outer_volume_mm3"], rel=0.03)
        assert got["area_mm2"] == pytest.approx(want["outer_surface_area_mm2"], rel=0.03)


def test_glb_is_valid_and_loads_with_lod_scenes(knee_glb: tuple[Path, dict], truth: dict) -> None:
    path, report = knee_glb
    ensure_validator()
    assert_valid_glb(path)
    scene = trimesh.load(path)
    assert isinstance(scene, trimesh.Scene)
    assert report["lods"][0]["total"] < report["lods"][-1]["total"]  # coarse first
    # The patella centre lands at its documented glTF position: the patella mesh's
    # centroid, through the file's own root transform, is the landmark in metres.
    patella_name = report["structures"][2]["name"]
    finest = len(report["lods"]) - 1
    geometry_name = f"{patella_name}.lod{finest}"
    node = next(n for n in scene.graph.nodes_geometry if scene.graph[n][1] == geometry_name)
    geometry = scene.geometry[geometry_name]
    world = trimesh.transform_points(geometry.vertices, scene.graph[node][0])
    centre = trimesh.Trimesh(world, geometry.faces).center_mass
    x, y, z = truth["landmarks"]["patella_centre"]["lps_mm"]
    assert centre == pytest.approx([x / 1000, z / 1000, -y / 1000], abs=0.0005)


def test_cli_convert_json(
    sample_ct: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.glb"
    assert main(["convert", str(sample_ct), "-o", str(out), "--json", "--compression", "none"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bytes"] == out.stat().st_size
    assert set(report["seconds"]) == {"read", "segment", "mesh", "decimate", "write"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "folder", ["ct_skull_phantom_philips_bone_1mm", "ct_head_ge_gantry_tilt_variable_spacing"]
)
def test_real_ct_gives_a_closed_skull(shared_data: Path, tmp_path: Path, folder: str) -> None:
    out = tmp_path / "skull.glb"
    report = convert(shared_data / folder, out).as_dict()
    skull = report["structures"][0]
    assert skull["watertight"]
    assert skull["volume_mm3"] > 200_000  # an adult skull's bone: a few hundred ml
    ensure_validator()
    assert_valid_glb(out)
    assert np.isfinite(skull["area_mm2"])
