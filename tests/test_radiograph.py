"""X-ray (CR, DX, XA): physical size, display pipeline, MONOCHROME1, cine handling."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from holo import StudyError
from holo.imaging import read_cine, read_radiograph, read_series


@pytest.mark.parametrize(
    ("relpath", "shape", "spacing", "source"),
    [
        ("xray_cr_hip_wg04_rg2/RG2_UNC.dcm", (2140, 1760), (0.2, 0.2), "PixelSpacing"),
        ("xray_dx_feline_thorax_deid/cat.dcm", (2614, 3072), (0.14, 0.14), "PixelSpacing"),
        (
            "xray_dx_feline_thorax_deid/dx_image_small_highdicom.dcm",
            (169, 211),
            (1.2, 1.2012),
            "PixelSpacing",
        ),
        ("xray_xa_angiography/XA1_JPLL.dcm", (1024, 1024), (0.2, 0.2), "assumed"),
    ],
)
def test_physical_size(
    shared_data: Path,
    relpath: str,
    shape: tuple[int, int],
    spacing: tuple[float, float],
    source: str,
) -> None:
    image = read_radiograph(shared_data / relpath)
    assert image.pixels.shape == shape
    assert image.pixel_spacing == pytest.approx(spacing, abs=1e-4)
    assert image.spacing_source == source
    assert image.size_mm == pytest.approx((shape[0] * spacing[0], shape[1] * spacing[1]), rel=1e-3)
    assert image.display.min() >= 0 and image.display.max() <= 1


def test_zero_pixel_spacing_falls_back_explicitly(
    shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = shared_data / "xray_cr_chest_monochrome1_wg04_rg1" / "RG1_J2KI.dcm"  # "0.000\0.000"
    with caplog.at_level(logging.WARNING, logger="holo"):
        image = read_radiograph(path, fallback_spacing_mm=0.15)
    assert image.spacing_source == "assumed"
    assert image.pixel_spacing == (0.15, 0.15)
    assert any("assuming 0.15 mm" in r.getMessage() for r in caplog.records)


def test_imager_spacing_used_when_only_detector_pitch_is_given(sample_dx: Path) -> None:
    image = read_radiograph(sample_dx)
    assert image.spacing_source == "ImagerPixelSpacing"
    assert image.pixel_spacing[0] > 0


@pytest.mark.parametrize(
    "relpath",
    [
        "xray_cr_chest_monochrome1_wg04_rg1/RG1_J2KI.dcm",
        "malformed_and_edge_cases/CR-MONO1-10-chest_no_meta",
    ],
)
def test_monochrome1_chest_displays_spine_bright_lungs_dark(
    shared_data: Path, relpath: str
) -> None:
    image = read_radiograph(shared_data / relpath)
    assert image.photometric == "MONOCHROME1"
    rows, cols = image.display.shape
    band = image.display[int(rows * 0.4) : int(rows * 0.6)]
    spine = float(np.median(band[:, int(cols * 0.47) : int(cols * 0.53)]))
    lungs = float(
        np.median(
            np.c_[
                band[:, int(cols * 0.2) : int(cols * 0.3)],
                band[:, int(cols * 0.7) : int(cols * 0.8)],
            ]
        )
    )
    assert spine > lungs + 0.15, (spine, lungs)
    # Without the inversion the same image would show the lungs bright: the check can fail.
    assert (1 - spine) < (1 - lungs)


def test_monochrome1_high_values_display_dark(shared_data: Path) -> None:
    # In MONOCHROME1 high stored values mean dark: display must fall as values rise.
    image = read_radiograph(shared_data / "xray_cr_tibia_monochrome1_wg04_rg3" / "RG3_UNC.dcm")
    corr = np.corrcoef(image.pixels.ravel()[::97], image.display.ravel()[::97])[0, 1]
    assert corr < -0.9


def test_window_from_header_and_percentile_fallback(shared_data: Path) -> None:
    hip = read_radiograph(shared_data / "xray_cr_hip_wg04_rg2" / "RG2_UNC.dcm")
    assert hip.window == (511.0, 1024.0) and hip.window_source == "WindowCenter/WindowWidth"
    xa = read_radiograph(shared_data / "xray_xa_angiography" / "XA1_JPLL.dcm")
    assert xa.window_source == "percentiles"
    # No window in the header: the 0.5th-99.5th percentiles of the image set it, so about
    # 0.5 % of pixels saturate white (the black collimator border is 21 % of the frame).
    lo, hi = np.percentile(xa.pixels, [0.5, 99.5])
    assert xa.window == pytest.approx(((lo + hi) / 2, hi - lo))
    assert 0.001 < float((xa.display == 1).mean()) < 0.02
    assert xa.to_uint8().dtype == np.uint8 and xa.to_uint8().max() == 255


def test_cine_is_a_sequence_never_a_volume(shared_data: Path) -> None:
    path = shared_data / "xray_xa_angiography" / "HasFragmentSequence_XA_96frames.dcm"
    with pytest.raises(StudyError, match="96-frame XA cine"):
        read_radiograph(path)
    with pytest.raises(StudyError, match="no CT series"):
        read_series(path)
    cine = read_cine(path)
    assert len(cine) == 96 and cine.frames.shape == (96, 512, 512)
    assert cine.frame_time_ms == 33.0
    tenth = read_radiograph(path, frame=10)
    assert np.array_equal(tenth.pixels, cine.frames[10])
    assert not np.array_equal(cine.frames[0], cine.frames[50])  # frames differ in time
    with pytest.raises(StudyError, match="frame 96 does not exist"):
        read_radiograph(path, frame=96)
    with pytest.raises(StudyError, match="not a cine"):
        read_cine(shared_data / "xray_xa_angiography" / "XA1_JPLL.dcm")


def test_several_xrays_need_a_choice(shared_data: Path) -> None:
    folder = shared_data / "xray_cr_hip_wg04_rg2"
    with pytest.raises(StudyError, match="2 X-ray images; name one by SOPInstanceUID"):
        read_radiograph(folder)
