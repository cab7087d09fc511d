"""Volume geometry, the patient->glTF rule, SimpleITK and NIfTI round trips, public API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import holo
from holo.cli import main
from holo.coords import GLTF_FROM_LPS, gltf_from_lps, lps_from_gltf
from holo.imaging import read_radiograph, read_series
from holo.volume import Volume


def test_public_api_is_deliberate() -> None:
    assert sorted(holo.__all__) == [
        "Cine",
        "HoloError",
        "PipelineError",
        "Radiograph",
        "SeriesGeometryError",
        "SessionError",
        "StudyError",
        "Volume",
        "convert",
        "index_study",
        "read_cine",
        "read_radiograph",
        "read_series",
        "read_study",
    ]
    assert (Path(holo.__file__).parent / "py.typed").is_file()
    # Every public name resolves (each loads its module on first use).
    assert all(getattr(holo, name) is not None for name in holo.__all__)


def test_gltf_rule_is_a_proper_rotation_with_documented_axes() -> None:
    rotation = GLTF_FROM_LPS[:3, :3] * 1000
    assert np.allclose(rotation @ rotation.T, np.eye(3))
    assert np.linalg.det(rotation) == pytest.approx(1.0)  # no mirror: winding survives
    # Left -> +X, Superior -> +Y (up), Anterior (= -Posterior) -> +Z; mm -> m.
    assert gltf_from_lps([10, 0, 0]) == pytest.approx([0.01, 0, 0])
    assert gltf_from_lps([0, 0, 10]) == pytest.approx([0, 0.01, 0])
    assert gltf_from_lps([0, -10, 0]) == pytest.approx([0, 0, 0.01])
    points = np.random.default_rng(1).normal(size=(20, 3)) * 100
    assert lps_from_gltf(gltf_from_lps(points)) == pytest.approx(points)


def _oblique_volume() -> Volume:
    rng = np.random.default_rng(7)
    array = rng.integers(-1000, 2000, size=(6, 7, 8)).astype(np.int16)
    angle = np.radians(25)
    rot = np.array(
        [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([2.5, 0.8, 0.6])
    affine[:3, 3] = [-120.0, 35.5, 410.0]
    return Volume(array=array, affine=affine)


def test_sitk_round_trip_keeps_geometry_and_values() -> None:
    volume = _oblique_volume()
    image = volume.to_sitk()
    # ITK indexes (x, y, z) = (col, row, slice): the same voxel lands at the same point.
    index = (3, 5, 2)  # slice, row, col
    point = image.TransformIndexToPhysicalPoint((index[2], index[1], index[0]))
    assert point == pytest.approx(volume.index_to_lps(index))
    assert image[index[2], index[1], index[0]] == volume.array[index]
    back = Volume.from_sitk(image)
    assert np.array_equal(back.array, volume.array)
    assert np.allclose(back.affine, volume.affine)
    assert volume.lps_to_index(volume.index_to_lps(index)) == pytest.approx(index)


def test_nifti_written_by_cli_reads_back_identically(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "ct_legacy_no_meta_egsnrc_phantom"
    out = tmp_path / "out" / "legacy.nii.gz"
    assert main(["read", str(folder), "-o", str(out)]) == 0
    original = read_series(folder)
    again = read_series(out)
    assert np.array_equal(again.array, original.array)
    assert np.allclose(again.affine, original.affine, atol=1e-4)
    assert not list(out.parent.glob(".*"))  # no temporary file left behind
    assert sitk.ReadImage(str(out)).GetSize() == (512, 512, 10)


def test_cli_json_summaries(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["read", str(shared_data / "ct_enhanced_multiframe_nema"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "volume" and summary["shape"] == [2, 512, 512]
    assert summary["spacing_mm"] == pytest.approx([10.0, 0.3887, 0.3887], abs=1e-4)
    assert main(["studies", str(shared_data / "xray_xa_angiography"), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert sorted(s["kind"] for s in listing["series"]) == ["cine", "radiograph"]
    assert {Path(p).name for p, _ in listing["skipped"]} == {"README.md", "MANIFEST.tsv"}


def test_cli_writes_radiograph_png(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "hip.png"
    path = shared_data / "xray_cr_hip_wg04_rg2" / "RG2_UNC.dcm"
    assert main(["read", str(path), "-o", str(out)]) == 0
    png = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert png.shape == (2140, 1760) and png.dtype == np.uint8
    assert np.array_equal(png, read_radiograph(path).to_uint8())
    assert int(png.max()) - int(png.min()) > 150  # the header's window keeps the contrast
