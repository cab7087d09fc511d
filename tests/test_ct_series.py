"""Reading real CT series from ../shared/data into Volumes: geometry, HU, awkward series."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from holo import SeriesGeometryError, StudyError
from holo.coords import gltf_from_lps
from holo.imaging import index_study, read_series
from holo.volume import Volume


def _sample_plane(image: sitk.Image, ds: pydicom.Dataset) -> np.ndarray:
    """Sample ``image`` (trilinear) on the plane of one original DICOM slice."""
    ref = sitk.Image(int(ds.Columns), int(ds.Rows), 1, sitk.sitkFloat32)
    ps = [float(x) for x in ds.PixelSpacing]
    ref.SetSpacing((ps[1], ps[0], 1.0))
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    ref.SetDirection(tuple(np.stack([iop[:3], iop[3:], normal], axis=1).ravel()))
    ref.SetOrigin(tuple(float(x) for x in ds.ImagePositionPatient))
    out = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkLinear, -9999.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)[0]


def _plane_agreement(volume: Volume, folder: Path) -> list[float]:
    """Correlation between each original slice and the volume sampled on that slice's plane."""
    image = volume.to_sitk()
    scores = []
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        original = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(
            ds.RescaleIntercept
        )
        sampled = _sample_plane(image, ds)
        inside = sampled > -9000
        assert inside.mean() > 0.5, f"{path.name}: plane mostly outside the volume"
        scores.append(float(np.corrcoef(sampled[inside], original[inside])[0, 1]))
    return scores


def test_skull_phantom_reads_with_scanner_geometry(shared_data: Path) -> None:
    volume = read_series(shared_data / "ct_skull_phantom_philips_bone_1mm")
    assert volume.shape == (140, 512, 512)
    assert volume.spacing == pytest.approx((1.0, 0.451172, 0.451172), abs=1e-4)
    assert np.allclose(volume.directions, np.eye(3)[:, [2, 1, 0]], atol=1e-6)  # z, y, x
    assert volume.units == "HU"
    assert volume.array.dtype == np.int16
    assert volume.array.min() == -1024 and volume.array.max() == 3071
    assert (volume.array > 300).sum() > 100_000  # the bone of the skull
    assert volume.history == ()
    # Slices run inferior -> superior whatever the file names (I10, I100, I1000, ...).
    positions = sorted(
        float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2])
        for p in (shared_data / "ct_skull_phantom_philips_bone_1mm").glob("*.dcm")
    )
    assert volume.origin[2] == pytest.approx(positions[0])
    assert volume.index_to_lps([139, 0, 0])[2] == pytest.approx(positions[-1])


def test_skull_phantom_matches_simpleitk_reference(shared_data: Path) -> None:
    folder = shared_data / "ct_skull_phantom_philips_bone_1mm"
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    reference = Volume.from_sitk(reader.Execute())
    volume = read_series(folder)
    assert np.array_equal(volume.array, reference.array)
    assert np.allclose(volume.affine, reference.affine, atol=1e-4)


def test_gantry_tilt_and_uneven_spacing_are_resampled_to_true_shape(shared_data: Path) -> None:
    folder = shared_data / "ct_head_ge_gantry_tilt_variable_spacing"
    volume = read_series(folder)
    # An orthogonal grid: no shear left in the affine.
    cols = volume.affine[:3, :3] / np.linalg.norm(volume.affine[:3, :3], axis=0)
    assert np.allclose(cols.T @ cols, np.eye(3), atol=1e-6)
    assert volume.metadata["MeasuredGantryTiltDegrees"] == pytest.approx(18.5, abs=0.05)
    assert any("gantry tilt" in h for h in volume.history)
    assert any("uneven slice steps" in h for h in volume.history)
    assert volume.spacing[0] == pytest.approx(4.0, abs=0.01)
    # Every original tilted plane is found again, at its true place, inside the volume.
    scores = _plane_agreement(volume, folder)
    assert min(scores) > 0.99, scores

    # The same check fails for a naive stack that ignores the tilt (so it can fail).
    naive_affine = volume.affine.copy()
    dss = sorted(
        (pydicom.dcmread(p, stop_before_pixels=True) for p in folder.glob("*.dcm")),
        key=lambda d: float(d.ImagePositionPatient[2]),
    )
    naive_affine[:3, 3] = np.array(dss[0].ImagePositionPatient, dtype=float)
    naive = Volume(array=volume.array[:, :512, :], affine=naive_affine)
    assert min(_plane_agreement(naive, folder)) < 0.9


def test_missing_slices_are_an_error_naming_the_gap(shared_data: Path) -> None:
    folder = shared_data / "ct_chest_missing_and_duplicate_slices"
    with pytest.raises(SeriesGeometryError) as info:
        read_series(folder)
    message = str(info.value)
    assert "missing slices" in message and "115.0 mm" in message and "--allow-gaps" in message
    assert "\n" not in message
    assert info.value.series_uid


def test_gaps_interpolated_on_request_and_duplicate_dropped(
    shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = shared_data / "ct_chest_missing_and_duplicate_slices"
    with caplog.at_level(logging.WARNING, logger="holo"):
        volume = read_series(folder, allow_gaps=True)
    assert any("repeats the position" in r.getMessage() for r in caplog.records)
    assert any("dropped duplicate slice" in h for h in volume.history)
    assert any("interpolated across 3 gap(s)" in h for h in volume.history)
    positions = [
        float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2])
        for p in folder.glob("*.dcm")
    ]
    extent = volume.index_to_lps([volume.shape[0] - 1, 0, 0])[2] - volume.origin[2]
    assert extent == pytest.approx(max(positions) - min(positions), abs=volume.spacing[0])
    assert -1100 < np.median(volume.array) < 100  # chest: air, lung and soft tissue
    # An explicit spacing is honoured.
    fine = read_series(folder, allow_gaps=True, slice_spacing=5.0)
    assert fine.spacing[0] == pytest.approx(5.0)


def test_enhanced_multiframe_geometry_from_functional_groups(shared_data: Path) -> None:
    volume = read_series(shared_data / "ct_enhanced_multiframe_nema")
    assert volume.shape == (2, 512, 512)
    assert volume.spacing == pytest.approx((10.0, 0.388672, 0.388672), abs=1e-5)
    # PlanePositionSequence: frame 1 at z = -159, frame 2 at -149; orientation row = -x, so
    # the normal (row x col) is -z and slices run from z = -149 down to -159.
    assert volume.origin == pytest.approx([99.5, -301.5, -149.0])
    assert volume.directions[:, 2] == pytest.approx([-1.0, 0.0, 0.0])
    assert volume.directions[:, 0] == pytest.approx([0.0, 0.0, -1.0])
    assert volume.index_to_lps([1, 0, 0]) == pytest.approx([99.5, -301.5, -159.0])
    assert volume.array.min() == -1024  # RescaleIntercept from the shared groups


def test_legacy_files_without_preamble_or_meta(shared_data: Path) -> None:
    volume = read_series(shared_data / "ct_legacy_no_meta_egsnrc_phantom")
    assert volume.shape == (10, 512, 512)
    assert volume.spacing == pytest.approx((5.0, 0.69, 0.69))
    assert volume.array.min() == -1500 and volume.array.max() == 1439
    assert volume.metadata["Modality"] == "CT"


def test_largest_ct_series_is_chosen_across_all_shared_data(shared_data: Path) -> None:
    index = index_study(shared_data)
    chosen = index.volume_series()
    assert chosen.image_count == 140  # the skull phantom
    kinds = {s.kind for s in index.series}
    assert {"volume", "radiograph", "cine"} <= kinds
    assert index.skipped  # READMEs, manifests and the unreadable files


def test_series_uid_selects_and_rejects(shared_data: Path) -> None:
    folder = shared_data / "ct_slice_transfer_syntaxes_wg04"
    index = index_study(folder)
    ct2 = next(s for s in index.series if s.image_count == 2 and "5457" in s.series_uid)
    volume = read_series(folder, series_uid=ct2.series_uid)
    assert volume.metadata["SeriesInstanceUID"] == ct2.series_uid
    with pytest.raises(StudyError, match="is not there"):
        read_series(folder, series_uid="1.2.3.4")
    hip = shared_data / "xray_cr_hip_wg04_rg2"
    with pytest.raises(StudyError, match="no CT series"):
        read_series(hip)
    cr_uid = index_study(hip).series[0].series_uid
    with pytest.raises(StudyError, match="not a CT/MR/PT volume"):
        read_series(hip, series_uid=cr_uid)


def test_sample_phantom_landmarks_land_at_their_known_positions(sample_ct: Path) -> None:
    truth = json.loads((sample_ct.parent / "truth.json").read_text())
    volume = read_series(sample_ct)
    assert volume.shape == tuple(truth["ct"]["shape_slice_row_col"])
    assert np.allclose(volume.affine, truth["ct"]["affine_index_to_lps"])
    for name, landmark in truth["landmarks"].items():
        index = landmark["voxel_index_slice_row_col"]
        assert volume.index_to_lps(index) == pytest.approx(landmark["lps_mm"], abs=1e-6), name
        assert volume.lps_to_index(landmark["lps_mm"]) == pytest.approx(index, abs=1e-6), name
        # The ARCHITECTURE rule written out independently of holo.coords:
        # (x, y, z)_gltf = (x_L, z_S, -y_P) / 1000.
        x, y, z = landmark["lps_mm"]
        assert gltf_from_lps(volume.index_to_lps(index)) == pytest.approx(
            [x / 1000, z / 1000, -y / 1000]
        )
    # File names run superior -> inferior; the volume still runs inferior -> superior.
    hu = truth["hu"]
    centre = truth["landmarks"]["patella_centre"]["voxel_index_slice_row_col"]
    assert abs(volume.array[tuple(centre)] - hu["cancellous"]) < 5 * truth["ct"]["noise_sigma_hu"]
