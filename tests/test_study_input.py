"""Study input handling: indexing without pixels, inconsistent series, other formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataelem import RawDataElement
from pydicom.encaps import encapsulate
from pydicom.uid import UID

from holo import SeriesGeometryError, StudyError
from holo.imaging import index_study, read_series

SKULL = "ct_skull_phantom_philips_bone_1mm"


def _copy_slices(shared_data: Path, tmp_path: Path, names: list[str]) -> list[Path]:
    out = []
    for name in names:
        ds = pydicom.dcmread(shared_data / SKULL / name)
        ds.save_as(tmp_path / name)
        out.append(tmp_path / name)
    return out


def test_indexing_reads_headers_only(shared_data: Path) -> None:
    index = index_study(shared_data / SKULL)
    (series,) = index.series
    assert len(series.instances) == 140
    for inst in series.instances:
        pixel_data = inst.dataset.get_item(0x7FE00010, keep_deferred=True)
        # Deferred: pydicom recorded where the pixels are but did not read them.
        assert isinstance(pixel_data, RawDataElement) and pixel_data.value is None
        assert pixel_data.value_tell > 0 and pixel_data.length == 512 * 512 * 2


def test_mixed_orientation_is_an_error(shared_data: Path, tmp_path: Path) -> None:
    paths = _copy_slices(shared_data, tmp_path, ["I10.dcm", "I20.dcm", "I30.dcm"])
    ds = pydicom.dcmread(paths[1])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # a coronal image in an axial series
    ds.save_as(paths[1])
    with pytest.raises(SeriesGeometryError, match=r"mixes orientations: .* I20\.dcm"):
        read_series(tmp_path)


def test_mixed_sizes_is_an_error(shared_data: Path, tmp_path: Path) -> None:
    paths = _copy_slices(shared_data, tmp_path, ["I10.dcm", "I20.dcm"])
    ds = pydicom.dcmread(paths[0])
    ds.Rows, ds.Columns = 256, 256
    ds.PixelData = ds.PixelData[: 256 * 256 * 2]
    ds.save_as(paths[0])
    with pytest.raises(SeriesGeometryError, match="mixes image sizes") as info:
        read_series(tmp_path)
    assert "1 of 512x512" in str(info.value) and "1 of 256x256" in str(info.value)


def test_missing_position_is_an_error(shared_data: Path, tmp_path: Path) -> None:
    paths = _copy_slices(shared_data, tmp_path, ["I10.dcm", "I20.dcm"])
    ds = pydicom.dcmread(paths[0])
    del ds.ImagePositionPatient
    ds.save_as(paths[0])
    with pytest.raises(SeriesGeometryError, match=r"I10.dcm: has no \(0020,0032\) Image Position"):
        read_series(tmp_path)


def test_unsupported_transfer_syntax_is_named(shared_data: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(shared_data / "malformed_and_edge_cases" / "CT_small.dcm")
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2 video
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\0" * 100])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "mpeg.dcm")
    with pytest.raises(StudyError, match=r"MPEG2 Main Profile .* is not supported"):
        read_series(tmp_path / "mpeg.dcm")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_other_volume_formats(shared_data: Path, tmp_path: Path, suffix: str) -> None:
    original = read_series(shared_data / "ct_legacy_no_meta_egsnrc_phantom")
    path = tmp_path / f"volume{suffix}"
    sitk.WriteImage(original.to_sitk(), str(path))
    again = read_series(path)
    assert np.array_equal(again.array, original.array)
    assert np.allclose(again.affine, original.affine, atol=1e-4)
    assert again.units == "HU" and "values taken as HU" in again.history[0]


def test_damaged_volume_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(StudyError, match=r"broken\.nii\.gz: cannot read as NIfTI"):
        read_series(path)
