"""Awkward inputs found in review: each case once broke or misled the reader."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from holo import SeriesGeometryError, StudyError
from holo.cli import main
from holo.imaging import deidentify_dataset, index_study, public_metadata, read_series

SKULL = "ct_skull_phantom_philips_bone_1mm"
CT_SMALL = "malformed_and_edge_cases/CT_small.dcm"


def _restack(shared_data: Path, folder: Path, positions_mm: list[float], thickness: float) -> None:
    """Write skull slices re-placed at the given z positions (a synthetic series)."""
    folder.mkdir()
    for k, z in enumerate(positions_mm):
        ds = pydicom.dcmread(shared_data / SKULL / f"I{10 * (k + 1)}.dcm")
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], z]
        ds.SliceThickness = thickness
        ds.InstanceNumber = k + 1
        ds.save_as(folder / f"s{k:03d}.dcm")


def test_deflated_transfer_syntax_decodes_like_the_original(
    shared_data: Path, tmp_path: Path
) -> None:
    ds = pydicom.dcmread(shared_data / CT_SMALL)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    got = read_series(tmp_path / "deflated.dcm")
    want = read_series(shared_data / CT_SMALL)
    assert np.array_equal(got.array, want.array)


def test_one_damaged_header_skips_that_file_only(shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "study"
    folder.mkdir()
    for path in sorted((shared_data / "ct_legacy_no_meta_egsnrc_phantom").glob("*.ct")):
        (folder / path.name).write_bytes(path.read_bytes())
    raw = (shared_data / CT_SMALL).read_bytes()
    marker = b"\x08\x00\x16\x00UI"  # (0008,0016) SOP Class UID, explicit VR "UI"
    assert marker in raw
    (folder / "damaged.dcm").write_bytes(raw.replace(marker, b"\x08\x00\x16\x00Ur", 1))
    index = index_study(folder)
    reasons = dict((f.short_name, r) for f, r in index.skipped)
    assert "damaged header" in reasons["damaged.dcm"]
    assert read_series(folder).shape == (10, 512, 512)
    assert main(["studies", str(folder)]) == 0


def test_file_meta_without_preamble_is_dicom(shared_data: Path, tmp_path: Path) -> None:
    clean = deidentify_dataset(pydicom.dcmread(shared_data / CT_SMALL), salt="s")
    clean.save_as(tmp_path / "clean.dcm")  # pydicom's default: no preamble, meta kept
    assert (tmp_path / "clean.dcm").read_bytes()[:2] == b"\x02\x00"
    volume = read_series(tmp_path / "clean.dcm")
    assert volume.shape == (1, 128, 128)


def test_overlapping_reconstruction_with_a_missing_slice_is_a_gap(
    shared_data: Path, tmp_path: Path
) -> None:
    # 5 mm slices every 2.5 mm; the slice at 10 mm is missing: a 5 mm hole.
    positions = [0.0, 2.5, 5.0, 7.5, 12.5, 15.0, 17.5]
    _restack(shared_data, tmp_path / "overlap", positions, thickness=5.0)
    with pytest.raises(SeriesGeometryError, match=r"1 gap\(s\), the largest 5\.0 mm"):
        read_series(tmp_path / "overlap")


def test_sparse_series_with_table_jitter_is_regular(shared_data: Path, tmp_path: Path) -> None:
    # 1 mm slices every 10 mm (a sparse protocol), positions jittered by up to 0.03 mm.
    positions = [0.0, 10.03, 19.98, 30.02, 40.0, 49.97]
    _restack(shared_data, tmp_path / "sparse", positions, thickness=1.0)
    volume = read_series(tmp_path / "sparse")
    assert volume.shape[0] == 6 and volume.history == ()
    assert volume.spacing[0] == pytest.approx(49.97 / 5)


def test_near_duplicates_keep_the_lowest_instance_number(shared_data: Path, tmp_path: Path) -> None:
    _restack(shared_data, tmp_path / "dup", [0.0, 1.0, 2.0, 2.005], thickness=1.0)
    last = pydicom.dcmread(tmp_path / "dup" / "s003.dcm")
    last.InstanceNumber = 0  # lower than its twin at 2.0 mm
    last.save_as(tmp_path / "dup" / "s003.dcm")
    volume = read_series(tmp_path / "dup")
    assert volume.shape[0] == 3
    assert any("dropped duplicate slice s002.dcm" in h for h in volume.history)


def test_multiframe_without_per_frame_geometry_is_refused(
    shared_data: Path, tmp_path: Path
) -> None:
    ds = pydicom.dcmread(shared_data / CT_SMALL)
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    ds.save_as(tmp_path / "mf.dcm")
    with pytest.raises(SeriesGeometryError, match="2 frames but no per-frame geometry"):
        read_series(tmp_path / "mf.dcm")


def test_zip_with_a_bad_checksum_is_a_clear_error(shared_data: Path, tmp_path: Path) -> None:
    archive = tmp_path / "crc.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.dcm", (shared_data / CT_SMALL).read_bytes())
    data = bytearray(archive.read_bytes())
    data[2000] ^= 0xFF  # flip a byte inside the stored member
    archive.write_bytes(bytes(data))
    with pytest.raises(StudyError, match=r"member 'a\.dcm' cannot be extracted"):
        read_series(archive)


def test_enhanced_ct_keeps_its_geometry_when_deidentified(
    shared_data: Path, tmp_path: Path
) -> None:
    ds = pydicom.dcmread(shared_data / "ct_enhanced_multiframe_nema" / "eCT_Supplemental.dcm")
    clean = deidentify_dataset(ds, salt="s")
    clean.save_as(tmp_path / "clean.dcm", enforce_file_format=True)
    assert np.allclose(
        read_series(tmp_path / "clean.dcm").affine,
        read_series(shared_data / "ct_enhanced_multiframe_nema").affine,
    )
    assert "ContrastBolusAgent" not in public_metadata({"ContrastBolusAgent": "Dr Smith's"})


def test_cli_honours_every_option(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy = shared_data / "ct_legacy_no_meta_egsnrc_phantom"
    taken = tmp_path / "taken.nii.gz"
    taken.mkdir()  # the output path is a folder: a one-line error, not a traceback
    assert main(["read", str(legacy), "-o", str(taken)]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert main(["read", str(legacy), "--slice-spacing", "0"]) == 2
    nifti = tmp_path / "v.nii.gz"
    assert main(["read", str(legacy), "-o", str(nifti)]) == 0
    assert main(["read", str(nifti), "--json"]) == 0  # NIfTI input
    hip = shared_data / "xray_cr_hip_wg04_rg2" / "RG2_UNC.dcm"
    assert main(["read", str(hip), "--frame", "3"]) == 2
    capsys.readouterr()
    sop = str(pydicom.dcmread(hip, stop_before_pixels=True).SOPInstanceUID)
    assert main(["read", str(legacy), str(hip), "--sop", sop, "--json"]) == 0
    assert '"kind": "radiograph"' in capsys.readouterr().out
    err_lines = [line for line in capsys.readouterr().err.splitlines() if "Traceback" in line]
    assert err_lines == []
