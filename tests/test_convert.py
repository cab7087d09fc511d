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


@pytest.mark.parametrize("fmt", ["stl", "obj", "ply"])
def test_mesh_formats_hold_the_full_meshes_in_mm(
    sample_ct: Path, tmp_path: Path, truth: dict, fmt: str
) -> None:
    out = tmp_path / f"knee.{fmt}"
    report = convert(sample_ct, out, output_format=fmt).as_dict()
    loaded = trimesh.load(out, force="mesh")
    bodies = sorted(loaded.split(only_watertight=False), key=lambda b: -abs(b.volume))
    assert len(bodies) == 3
    femur = truth["bones"]["femur"]
    assert abs(bodies[0].volume) == pytest.approx(femur["outer_volume_mm3"], rel=0.03)  # mm³
    assert report["bytes"] == out.stat().st_size


def test_segment_cli_writes_labels_on_the_study_grid(
    sample_ct: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import SimpleITK as sitk

    from holo.imaging import read_series
    from segmentation import segment

    out = tmp_path / "labels.nii.gz"
    assert main(["segment", str(sample_ct), "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [x["name"] for x in summary["labels"]] == ["bone_1", "bone_2", "bone_3"]
    written = sitk.ReadImage(str(out))
    volume = read_series(sample_ct)
    expected = segment(volume).labels
    assert np.array_equal(sitk.GetArrayFromImage(written), expected)
    assert written.GetOrigin() == pytest.approx(tuple(volume.origin))


def test_progress_bars_show_every_stage_on_a_terminal(sample_ct: Path, tmp_path: Path) -> None:
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    main_fd, sub_fd = pty.openpty()
    # A terminal of 24 rows x 100 columns (a fresh pty reports 0 columns).
    fcntl.ioctl(sub_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "holo.cli",
            "convert",
            str(sample_ct),
            "-o",
            str(tmp_path / "k.glb"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=sub_fd,
    )
    os.close(sub_fd)
    chunks = []
    while True:
        try:
            data = os.read(main_fd, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(main_fd)
    shown = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    for stage in ("read", "segment", "mesh", "decimate", "write"):
        assert f"{stage}" in shown and "100%" in shown, shown[-500:]
    assert "wrote" in proc.stdout.read().decode()  # the summary still goes to stdout


def test_radiograph_becomes_a_panel_of_its_physical_size(sample_dx: Path, tmp_path: Path) -> None:
    from holo.imaging import read_radiograph

    out = tmp_path / "panel.glb"
    report = convert(sample_dx, out).as_dict()
    image = read_radiograph(sample_dx)
    assert report["structures"][0]["size_mm"] == pytest.approx(list(image.size_mm))
    ensure_validator()
    assert_valid_glb(out)
    scene = trimesh.load(out)
    (panel,) = scene.geometry.values()
    width, height, depth = panel.extents
    assert (height * 1000, width * 1000) == pytest.approx(image.size_mm)  # metres in glTF
    assert depth == 0
    # The texture is the display image the right way up: the vertex at the top-left of
    # the panel (max Y, min X) samples the image's top-left pixel.
    texture = np.asarray(panel.visual.material.baseColorTexture.convert("L"), dtype=float)
    display = image.to_uint8().astype(float)
    assert texture.shape == display.shape
    assert np.array_equal(texture, display)  # PNG is lossless: the same grey levels
    assert np.abs(texture - display[::-1]).mean() > 2.0  # so a flipped panel would fail
    top_left = np.argmin(panel.vertices[:, 0] - panel.vertices[:, 1])
    u, v = panel.visual.uv[top_left]
    assert (u, v) == (0.0, 1.0)  # OpenGL-style UV as trimesh loads it: image row 0 is v = 1


ALL_CT = [
    "ct_legacy_no_meta_egsnrc_phantom",
    "ct_enhanced_multiframe_nema",
    "ct_chest_missing_and_duplicate_slices",
    "ct_slice_transfer_syntaxes_wg04/CT1_JPLL.dcm",
    "ct_slice_transfer_syntaxes_wg04/CT2_JPLL.dcm",
    "ct_slice_transfer_syntaxes_wg04/693_J2KR.dcm",
    "ct_slice_transfer_syntaxes_wg04/J2K_pixelrep_mismatch.dcm",
    "ct_slice_transfer_syntaxes_wg04/CT_head_JPEG_lossless_philips_fodicom.dcm",
    "malformed_and_edge_cases/CT_small.dcm",
    "malformed_and_edge_cases/bad_sequence.dcm",
    "malformed_and_edge_cases/explicit_VR-UN.dcm",
]


@pytest.mark.slow
@pytest.mark.parametrize("relpath", ALL_CT)
def test_every_shared_ct_converts_or_fails_cleanly(
    shared_data: Path, tmp_path: Path, relpath: str
) -> None:
    from holo import HoloError

    out = tmp_path / "m.glb"
    try:
        report = convert(shared_data / relpath, out, allow_gaps=True)
    except HoloError as err:  # a clear refusal is fine; any other exception is a defect
        assert "\n" not in str(err) and len(str(err)) < 400
        assert not out.exists()  # no partial file
        return
    assert report.structures and out.stat().st_size == report.bytes
    ensure_validator()
    assert_valid_glb(out)


def test_report_writes_three_thumbnails(sample_ct: Path, tmp_path: Path) -> None:
    import SimpleITK as sitk

    report = convert(sample_ct, tmp_path / "k.glb", report_dir=tmp_path / "report").as_dict()
    names = sorted(Path(p).name for p in report["thumbnails"])
    assert names == ["front.png", "side.png", "top.png"]
    for path in report["thumbnails"]:
        image = sitk.GetArrayFromImage(sitk.ReadImage(path))
        assert image.shape[:2] == (512, 512)
        assert image.std() > 10  # something was drawn, not a blank frame
    assert "report" in report["seconds"]
