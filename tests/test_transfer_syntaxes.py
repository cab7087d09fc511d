"""Every transfer syntax in ../shared/data decodes; lossless ones exactly like the reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from holo import StudyError
from holo.imaging import read_radiograph, read_series

CT_DIR = "ct_slice_transfer_syntaxes_wg04"
RG3_DIR = "xray_cr_tibia_monochrome1_wg04_rg3"


@pytest.mark.parametrize(
    ("compressed", "reference"),
    [
        ("CT1_JPLL.dcm", "CT1_UNC.dcm"),  # JPEG Lossless SV1
        ("CT1_RLE.dcm", "CT1_UNC.dcm"),  # RLE Lossless
        ("CT1_RLE_multifragment_fodicom.dcm", "CT1_UNC.dcm"),  # RLE split over fragments
        ("CT1_J2KR.dcm", "CT1_UNC.dcm"),  # JPEG 2000 lossless
        ("CT1_JLSL.dcm", "CT1_UNC.dcm"),  # JPEG-LS lossless
        ("CT2_JPLL.dcm", "CT2_UNC.dcm"),
    ],
)
def test_lossless_ct_decodes_identical_to_uncompressed(
    shared_data: Path, compressed: str, reference: str
) -> None:
    got = read_series(shared_data / CT_DIR / compressed)
    want = read_series(shared_data / CT_DIR / reference)
    assert got.array.dtype == want.array.dtype == np.int16
    assert np.array_equal(got.array, want.array)
    assert np.allclose(got.affine, want.affine)


@pytest.mark.parametrize(
    ("compressed", "max_error_hu", "mean_error_hu"),
    [("CT1_J2KI.dcm", 352, 40.0), ("CT1_JLSN.dcm", 4, 3.0)],  # max: the data README
)
def test_lossy_ct_decodes_close_to_uncompressed(
    shared_data: Path, compressed: str, max_error_hu: int, mean_error_hu: float
) -> None:
    got = read_series(shared_data / CT_DIR / compressed).array.astype(np.int32)
    want = read_series(shared_data / CT_DIR / "CT1_UNC.dcm").array.astype(np.int32)
    error = np.abs(got - want)
    assert 0 < error.max() <= max_error_hu
    assert error.mean() < mean_error_hu  # measured: J2KI 25.9 HU, JLSN 2.1 HU


@pytest.mark.parametrize(
    "name",
    [
        "693_J2KI.dcm",  # BitsStored 14 in a 16-bit J2K stream
        "693_J2KR.dcm",
        "693_UNCR.dcm",
        "J2K_pixelrep_mismatch.dcm",  # codestream unsigned, PixelRepresentation 1
        "CT_head_JPEG_lossless_philips_fodicom.dcm",
    ],
)
def test_bit_depth_quirks_give_plausible_hu(shared_data: Path, name: str) -> None:
    volume = read_series(shared_data / CT_DIR / name)
    hu = volume.array
    # Air outside the patient and bone inside; no wrap-around to +60000 or -30000.
    assert -4100 <= hu.min() <= -900, hu.min()  # padding -3024; lossy J2K rings to -3995
    assert 300 < hu.max() < 4100, hu.max()
    assert np.percentile(hu, 5) < -500 and np.percentile(hu, 95) > -200


def test_693_lossless_matches_its_uncompressed_original(shared_data: Path) -> None:
    lossless = read_series(shared_data / CT_DIR / "693_J2KR.dcm").array
    original = read_series(shared_data / CT_DIR / "693_UNCR.dcm").array
    assert np.array_equal(lossless, original)


@pytest.mark.parametrize("name", ["RG3_JPLL", "RG3_RLE", "RG3_J2KR", "RG3_JLSL"])
def test_lossless_radiograph_identical(shared_data: Path, name: str) -> None:
    got = read_radiograph(shared_data / RG3_DIR / f"{name}.dcm")
    want = read_radiograph(shared_data / RG3_DIR / "RG3_UNC.dcm")
    assert np.array_equal(got.pixels, want.pixels)


@pytest.mark.parametrize(("name", "bound"), [("RG3_J2KI", 9), ("RG3_JLSN", 4)])
def test_lossy_radiograph_close(shared_data: Path, name: str, bound: int) -> None:
    got = read_radiograph(shared_data / RG3_DIR / f"{name}.dcm").pixels
    want = read_radiograph(shared_data / RG3_DIR / "RG3_UNC.dcm").pixels
    assert 0 < np.abs(got - want).max() <= bound


def test_hip_jpeg_lossless_identical(shared_data: Path) -> None:
    got = read_radiograph(shared_data / "xray_cr_hip_wg04_rg2" / "RG2_JPLL.dcm")
    want = read_radiograph(shared_data / "xray_cr_hip_wg04_rg2" / "RG2_UNC.dcm")
    assert np.array_equal(got.pixels, want.pixels)


def test_undecodable_jpeg_extended_is_a_clear_error(shared_data: Path) -> None:
    path = shared_data / RG3_DIR / "RG3_JPLY.dcm"
    with pytest.raises(StudyError) as info:
        read_radiograph(path)
    message = str(info.value)
    assert "RG3_JPLY.dcm" in message and "JPEG Extended" in message
    assert "\n" not in message
    assert info.value.path == path
