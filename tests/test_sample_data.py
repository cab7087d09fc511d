"""The project's own synthetic knee study (``sample_data/``) against its analytic truth.

The truth in ``truth.json`` is checked three ways: against the DICOM files (geometry, HU per
tissue, identity), against itself (closed-form volumes, voxel masks, landmark indices) and
against an independent reader (SimpleITK/GDCM). The generator must reproduce the committed
files byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
import SimpleITK as sitk

from holo.coords import gltf_from_lps

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"
GENERATOR = SAMPLE_DATA / "generate.py"
# Files beside the output that the generator does not write.
NOT_GENERATED = {"generate.py"}

FloatArray = npt.NDArray[np.float64]


def _generated_files(root: Path) -> dict[str, str]:
    """sha256 of every generated file under ``root``, keyed by relative POSIX path."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        top = rel.split("/")[0]
        if path.is_file() and rel not in NOT_GENERATED and top not in {"out", "__pycache__"}:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _segment_distance(points: FloatArray, start: list[float], end: list[float]) -> FloatArray:
    """Distance (mm) from points ``(..., 3)`` to a segment; written here, not imported."""
    a, b = np.asarray(start), np.asarray(end)
    d = b - a
    s = np.clip(((points - a) @ d) / (d @ d), 0.0, 1.0)
    return np.linalg.norm(points - a - s[..., None] * d, axis=-1)


@pytest.fixture(scope="module")
def truth() -> dict[str, Any]:
    return json.loads((SAMPLE_DATA / "truth.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ct_slices(sample_ct: Path) -> list[pydicom.Dataset]:
    """The CT datasets sorted by position along the slice normal (inferior first)."""
    datasets = [pydicom.dcmread(path) for path in sorted(sample_ct.glob("*.dcm"))]
    assert datasets, "the sample CT is missing: run `make sample-data`"
    return sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))


@pytest.fixture(scope="module")
def ct_hu(ct_slices: list[pydicom.Dataset]) -> FloatArray:
    """HU volume, shape (slices, rows, cols), slice index increasing towards Superior."""
    return np.stack(
        [
            ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            for ds in ct_slices
        ]
    )


@pytest.fixture(scope="module")
def centres(truth: dict[str, Any]) -> FloatArray:
    """LPS mm of every CT voxel centre, shape (slices, rows, cols, 3), from truth's geometry."""
    ct = truth["ct"]
    n_s, n_r, n_c = ct["shape_slice_row_col"]
    index = np.stack(
        np.meshgrid(np.arange(n_s), np.arange(n_r), np.arange(n_c), indexing="ij"), axis=-1
    )
    affine = np.asarray(ct["affine_index_to_lps"])
    return index @ affine[:3, :3].T + affine[:3, 3]


@pytest.fixture(scope="module")
def dx(sample_dx: Path) -> pydicom.Dataset:
    return pydicom.dcmread(sample_dx / "DX_0001.dcm")


# ---------------------------------------------------------------------------------------------
# Reproducibility
# ---------------------------------------------------------------------------------------------
def test_regenerating_gives_byte_identical_files(
    tmp_path: Path, sample_generator: ModuleType
) -> None:
    committed = _generated_files(SAMPLE_DATA)
    assert "truth.json" in committed and "knee_dx/DX_0001.dcm" in committed
    assert "video/operative.mp4" in committed  # libx264 output too: see README "Regenerate"
    assert sample_generator.main(["--out", str(tmp_path)]) == 0
    regenerated = _generated_files(tmp_path)
    assert sorted(regenerated) == sorted(committed)
    changed = [name for name in committed if committed[name] != regenerated[name]]
    assert not changed, f"regenerate with `make sample-data` and commit: {changed[:5]}"


def test_total_size_stays_small() -> None:
    demo_output = SAMPLE_DATA / "out"  # what `make demo` writes; git-ignored
    total = sum(
        p.stat().st_size
        for p in SAMPLE_DATA.rglob("*")
        if p.is_file() and demo_output not in p.parents
    )
    assert total < 6e6, total


# ---------------------------------------------------------------------------------------------
# CT: files, geometry, pixel data
# ---------------------------------------------------------------------------------------------
def test_ct_files_and_geometry_match_truth(
    ct_slices: list[pydicom.Dataset], truth: dict[str, Any]
) -> None:
    ct = truth["ct"]
    n_slices, rows, cols = ct["shape_slice_row_col"]
    dz, dy, dx_ = ct["spacing_slice_row_col_mm"]
    assert len(ct_slices) == n_slices == len(ct["files"])
    origin = np.asarray(ct["origin_lps_mm"])
    for k, ds in enumerate(ct_slices):
        assert ds.SOPClassUID == ct["sop_class_uid"] == ds.file_meta.MediaStorageSOPClassUID
        assert ds.file_meta.TransferSyntaxUID == ct["transfer_syntax_uid"]
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.preamble == b"\x00" * 128
        assert (ds.Modality, ds.BodyPartExamined, ds.PatientPosition) == ("CT", "KNEE", "HFS")
        assert (ds.Rows, ds.Columns) == (rows, cols)
        assert [float(v) for v in ds.PixelSpacing] == [dy, dx_]
        assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == dz
        assert [float(v) for v in ds.ImageOrientationPatient] == ct["image_orientation_patient"]
        expected = origin + np.array([0.0, 0.0, k * dz])
        assert np.allclose([float(v) for v in ds.ImagePositionPatient], expected, atol=1e-6)
        assert float(ds.SliceLocation) == pytest.approx(expected[2])
        # Files are named by InstanceNumber, which runs superior -> inferior.
        assert ds.InstanceNumber == n_slices - k
        assert Path(ds.filename).name == f"CT_{ds.InstanceNumber:04d}.dcm"
        assert (ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation) == (16, 12, 0)
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
        assert ds.StudyInstanceUID == truth["uids"]["StudyInstanceUID"]
        assert ds.SeriesInstanceUID == truth["uids"]["ct_SeriesInstanceUID"]
        assert ds.FrameOfReferenceUID == truth["uids"]["FrameOfReferenceUID"]
    assert len({ds.SOPInstanceUID for ds in ct_slices}) == n_slices


def test_simpleitk_reads_the_same_volume_and_geometry(
    sample_ct: Path, ct_hu: FloatArray, truth: dict[str, Any]
) -> None:
    # An independent reader (GDCM inside SimpleITK) decodes the RLE and sorts the slices.
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(sample_ct)))
    image = reader.Execute()
    ct = truth["ct"]
    assert image.GetOrigin() == pytest.approx(ct["origin_lps_mm"])
    assert image.GetSpacing() == pytest.approx(ct["spacing_slice_row_col_mm"][::-1])
    assert image.GetDirection() == pytest.approx(np.eye(3).ravel())
    assert np.array_equal(sitk.GetArrayFromImage(image).astype(np.float64), ct_hu)


def test_pixel_values_fit_12_bits_and_decoders_agree(ct_slices: list[pydicom.Dataset]) -> None:
    middle = ct_slices[len(ct_slices) // 2]
    native = middle.pixel_array
    assert native.dtype == np.uint16
    assert all(int(ds.pixel_array.max()) <= 4095 for ds in ct_slices)
    pytest.importorskip("pylibjpeg")
    other = pydicom.pixels.pixel_array(middle, decoding_plugin="pylibjpeg")
    assert np.array_equal(native, other)


# ---------------------------------------------------------------------------------------------
# CT: tissues
# ---------------------------------------------------------------------------------------------
def _knee_xy(centres: FloatArray, truth: dict[str, Any]) -> tuple[FloatArray, FloatArray]:
    knee = truth["frames"]["knee_centre_lps_mm"]
    return centres[..., 0] - knee[0], centres[..., 1] - knee[1]


def _ellipse(x: FloatArray, y: FloatArray, semi: list[float], grow: float) -> FloatArray:
    return (x / (semi[0] + grow)) ** 2 + (y / (semi[1] + grow)) ** 2


def _tissue_mask(tissue: str, centres: FloatArray, truth: dict[str, Any]) -> npt.NDArray[np.bool_]:
    """Voxels wholly inside one tissue: their centre is >= 1-2 mm from every boundary."""
    x, y = _knee_xy(centres, truth)
    skin = truth["soft_tissue"]["skin_semi_axes_x_y_mm"]
    lean = truth["soft_tissue"]["lean_semi_axes_x_y_mm"]
    bones = truth["bones"].values()
    if tissue == "air":  # anterior half only, where no couch is
        return (_ellipse(x, y, skin, 2.0) > 1.0) & (y < 0.0)
    if tissue == "fat":
        return (_ellipse(x, y, skin, -2.0) <= 1.0) & (_ellipse(x, y, lean, 2.0) > 1.0)
    if tissue == "soft_tissue":
        mask = _ellipse(x, y, lean, -2.0) <= 1.0
        for b in bones:
            mask &= _segment_distance(
                centres, b["segment_start_lps_mm"], b["segment_end_lps_mm"]
            ) > (b["radius_mm"] + 2.0)
        return mask
    if tissue == "couch":
        couch = truth["couch"]
        cx, cy = couch["centre_x_y_lps_mm"]
        rho = np.hypot(centres[..., 0] - cx, centres[..., 1] - cy)
        return (
            (rho >= couch["radius_mm"] + 1.0)
            & (rho <= couch["radius_mm"] + couch["thickness_mm"] - 1.0)
            & (centres[..., 1] > cy)
            & (np.abs(centres[..., 0] - cx) <= couch["half_width_mm"] - 1.0)
        )
    mask = np.zeros(centres.shape[:-1], dtype=bool)
    for b in bones:
        d = _segment_distance(centres, b["segment_start_lps_mm"], b["segment_end_lps_mm"])
        if tissue == "cortical":  # 1 mm > half the voxel diagonal (0.93 mm)
            mask |= (d >= b["inner_radius_mm"] + 1.0) & (d <= b["radius_mm"] - 1.0)
        else:
            mask |= d <= b["inner_radius_mm"] - 1.0
    return mask


@pytest.mark.parametrize(
    ("tissue", "low", "high"),
    [
        ("air", -1024, -900),
        ("fat", -200, 0),
        ("soft_tissue", -50, 130),
        ("couch", 100, 400),
        ("cancellous", 150, 450),
        ("cortical", 1000, 1600),
    ],
)
def test_every_voxel_inside_a_tissue_has_its_hu(
    tissue: str,
    low: float,
    high: float,
    ct_hu: FloatArray,
    centres: FloatArray,
    truth: dict[str, Any],
) -> None:
    mask = _tissue_mask(tissue, centres, truth)
    values = ct_hu[mask]
    assert values.size > 1000, f"{tissue}: only {values.size} voxels"
    assert low <= values.min() and values.max() <= high, (values.min(), values.max())
    # Mean is the documented HU (noise averages out; clipping at -1024 shifts air by < 1 HU).
    assert values.mean() == pytest.approx(truth["hu"][tissue], abs=2.0)
    sigma = truth["ct"]["noise_sigma_hu"]
    assert 0.8 * sigma < values.std() < 1.2 * sigma


def test_landmark_voxels(ct_hu: FloatArray, truth: dict[str, Any]) -> None:
    landmarks = truth["landmarks"]
    patella = ct_hu[tuple(landmarks["patella_centre"]["voxel_index_slice_row_col"])]
    assert 150 <= patella <= 450, patella  # cancellous
    # The femur's distal tip lies on the outer surface: a partial-volume voxel halfway
    # between soft tissue and cortical bone, i.e. at the documented isosurface value.
    tip = ct_hu[tuple(landmarks["femur_distal_tip"]["voxel_index_slice_row_col"])]
    assert tip == pytest.approx(truth["ct"]["bone_isosurface_hu"], abs=100)


# ---------------------------------------------------------------------------------------------
# Truth: internal consistency
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bone", ["femur", "tibia", "patella"])
def test_bone_truth_is_a_consistent_capsule(
    bone: str, truth: dict[str, Any], centres: FloatArray
) -> None:
    b = truth["bones"][bone]
    start, end = np.asarray(b["segment_start_lps_mm"]), np.asarray(b["segment_end_lps_mm"])
    r, h = b["radius_mm"], b["cylinder_length_mm"]
    assert np.linalg.norm(end - start) == pytest.approx(h, abs=1e-5)
    assert b["outer_volume_mm3"] == pytest.approx(np.pi * r**2 * h + 4 / 3 * np.pi * r**3)
    assert b["outer_surface_area_mm2"] == pytest.approx(2 * np.pi * r * h + 4 * np.pi * r**2)
    assert b["centroid_lps_mm"] == pytest.approx((start + end) / 2, abs=1e-5)
    assert b["inner_radius_mm"] == pytest.approx(r - b["cortical_thickness_mm"])
    assert 2.0 <= b["cortical_thickness_mm"] <= 3.0
    # Voxels whose centre is inside the analytic shape add up to the analytic volume.
    d = _segment_distance(centres, b["segment_start_lps_mm"], b["segment_end_lps_mm"])
    voxel = float(np.prod(truth["ct"]["spacing_slice_row_col_mm"]))
    assert np.count_nonzero(d <= r) * voxel == pytest.approx(b["outer_volume_mm3"], rel=0.03)
    inner = b["inner_radius_mm"]
    assert np.count_nonzero(d <= inner) * voxel == pytest.approx(b["inner_volume_mm3"], rel=0.03)
    labels = {"femur": 1, "tibia": 2, "patella": 3}
    assert b["label"] == labels[bone]


def test_landmarks_map_from_voxel_index_to_lps_and_gltf(
    ct_slices: list[pydicom.Dataset], truth: dict[str, Any]
) -> None:
    for name, landmark in truth["landmarks"].items():
        k, row, col = landmark["voxel_index_slice_row_col"]
        ds = ct_slices[k]
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        spacing_row, spacing_col = (float(v) for v in ds.PixelSpacing)
        lps = ipp + col * spacing_col * iop[:3] + row * spacing_row * iop[3:]
        assert lps == pytest.approx(landmark["lps_mm"], abs=1e-6), name
        assert landmark["gltf_m"] == pytest.approx(gltf_from_lps(lps), abs=1e-9), name
    tip = truth["landmarks"]["femur_distal_tip"]["gltf_m"]
    patella = truth["landmarks"]["patella_centre"]["gltf_m"]
    tibia = truth["landmarks"]["tibia_proximal_tip"]["gltf_m"]
    # glTF: +Y is Superior, +Z is Anterior.
    assert patella[1] > tip[1] > tibia[1]
    assert patella[2] > tip[2]


def test_bones_are_separate_components_whose_filled_volume_is_analytic(
    ct_hu: FloatArray, truth: dict[str, Any]
) -> None:
    ct = truth["ct"]
    bone = sitk.GetImageFromArray((ct_hu > ct["bone_isosurface_hu"]).astype(np.uint8))
    components = sitk.GetArrayFromImage(sitk.ConnectedComponent(bone, True))
    assert components.max() == 3  # the couch stays below the bone threshold
    for face in (0, -1):
        for axis in range(3):
            assert not np.take(components, face, axis=axis).any(), "a bone touches the border"
    voxel = float(np.prod(ct["spacing_slice_row_col_mm"]))
    affine = np.asarray(ct["affine_index_to_lps"])
    found = {}
    for label in range(1, 4):
        shell = sitk.GetImageFromArray((components == label).astype(np.uint8))
        # Cancellous bone is below the threshold: the shell is hollow until filled.
        filled = sitk.GetArrayFromImage(sitk.BinaryFillhole(shell)).astype(bool)
        assert filled.sum() > (components == label).sum()
        centroid = affine[:3, :3] @ np.argwhere(filled).mean(axis=0) + affine[:3, 3]
        name = min(
            truth["bones"],
            key=lambda n: np.linalg.norm(centroid - truth["bones"][n]["centroid_lps_mm"]),
        )
        b = truth["bones"][name]
        assert centroid == pytest.approx(b["centroid_lps_mm"], abs=0.5), name
        assert filled.sum() * voxel == pytest.approx(b["outer_volume_mm3"], rel=0.02), name
        found[name] = label
    assert sorted(found) == sorted(truth["bones"])
    gaps = truth["bone_surface_gaps_mm"]
    assert min(gaps.values()) >= 3.0


# ---------------------------------------------------------------------------------------------
# Identity (for de-identification tests)
# ---------------------------------------------------------------------------------------------
def test_identity_is_present_in_every_object_and_in_a_private_block(
    ct_slices: list[pydicom.Dataset], dx: pydicom.Dataset, truth: dict[str, Any]
) -> None:
    identity = truth["identity"]
    group = int(identity["private_group"], 16)
    for ds in (ct_slices[0], ct_slices[-1], dx):
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"):
            assert str(ds[keyword].value) == identity[keyword]
        for keyword in ("InstitutionName", "ReferringPhysicianName", "OtherPatientIDs"):
            assert str(ds[keyword].value) == identity[keyword]
        block = ds.private_block(group, identity["private_creator"])
        assert block[0x01].value == identity["PatientName"]
        assert any(elem.tag.is_private for elem in ds.iterall())


# ---------------------------------------------------------------------------------------------
# Radiograph
# ---------------------------------------------------------------------------------------------
def test_dx_attributes(
    dx: pydicom.Dataset, ct_slices: list[pydicom.Dataset], truth: dict[str, Any]
) -> None:
    t = truth["dx"]
    assert dx.SOPClassUID == t["sop_class_uid"] == dx.file_meta.MediaStorageSOPClassUID
    assert (dx.Modality, dx.PresentationIntentType, dx.ViewPosition) == (
        "DX",
        "FOR PRESENTATION",
        "AP",
    )
    assert "PixelSpacing" not in dx
    assert [float(v) for v in dx.ImagerPixelSpacing] == t["imager_pixel_spacing_mm"]
    assert list(dx.PatientOrientation) == t["patient_orientation"] == ["L", "F"]
    assert (dx.Rows, dx.Columns) == tuple(t["shape_rows_cols"])
    assert (dx.BitsStored, dx.PhotometricInterpretation) == (12, "MONOCHROME2")
    assert dx.StudyInstanceUID == ct_slices[0].StudyInstanceUID
    assert dx.SeriesInstanceUID not in {ct_slices[0].SeriesInstanceUID, ""}
    assert dx.PatientID == ct_slices[0].PatientID


def _dx_row_and_columns(truth: dict[str, Any], z_lps: float) -> tuple[int, FloatArray]:
    """Row index of a patient z, and the patient x (LPS mm) of every column."""
    x0, z0 = truth["dx"]["pixel_0_0_lps_x_z_mm"]
    step = truth["dx"]["imager_pixel_spacing_mm"][0]
    x = x0 + step * np.arange(truth["dx"]["shape_rows_cols"][1])
    return round((z0 - z_lps) / step), x  # row 0 is the most superior


def _femur_axis_x(truth: dict[str, Any], z_lps: float) -> float:
    femur = truth["bones"]["femur"]
    (xa, _, za), (xb, _, zb) = femur["segment_start_lps_mm"], femur["segment_end_lps_mm"]
    return xa + (xb - xa) * (z_lps - za) / (zb - za)


@pytest.mark.parametrize("above_joint_mm", [40.0, 55.0])
def test_dx_femur_is_brighter_than_the_soft_tissue_beside_it(
    above_joint_mm: float, dx: pydicom.Dataset, truth: dict[str, Any]
) -> None:
    pixels = dx.pixel_array.astype(np.float64)
    z = truth["frames"]["knee_centre_lps_mm"][2] + above_joint_mm  # femoral shaft, no patella
    row, x = _dx_row_and_columns(truth, z)
    offset = np.abs(x - _femur_axis_x(truth, z))
    r = truth["bones"]["femur"]["radius_mm"]
    bone = pixels[row, offset <= r - 3.0]
    soft = pixels[row, (offset >= r + 5.0) & (offset <= r + 15.0)]
    assert bone.min() > soft.max() + 200, (bone.min(), soft.max())
    # Beside the body only the couch attenuates; beyond the couch the beam meets only air.
    knee_x = truth["frames"]["knee_centre_lps_mm"][0]
    skin_x = truth["soft_tissue"]["skin_semi_axes_x_y_mm"][0]
    couch_x = truth["couch"]["half_width_mm"]
    beside = np.abs(x - knee_x)
    couch = pixels[row, (beside >= skin_x + 3.0) & (beside <= couch_x - 3.0)]
    air = pixels[row, beside >= couch_x + 3.0]
    assert couch.size and air.size
    assert air.max() < 50 < couch.min()
    assert couch.max() < 0.2 * soft.min()


def test_dx_columns_run_from_patient_right_to_left(
    dx: pydicom.Dataset, truth: dict[str, Any]
) -> None:
    # The femoral shaft leans towards patient Right (-x) going superior; with column 0 at
    # the patient's right, its bright band must sit at lower columns higher up.
    pixels = dx.pixel_array.astype(np.float64)
    knee_x, _, knee_z = truth["frames"]["knee_centre_lps_mm"]
    centres = []
    for above in (35.0, 65.0):
        row, x = _dx_row_and_columns(truth, knee_z + above)
        inner = np.flatnonzero(np.abs(x - knee_x) <= 35.0)  # inside the lean tissue
        step = np.diff(pixels[row, inner])
        # The bone's edges are the steepest rise and fall of the profile.
        centre = inner[0] + 0.5 * (np.argmax(step) + np.argmin(step)) + 0.5
        expected = np.interp(_femur_axis_x(truth, knee_z + above), x, np.arange(x.size))
        assert centre == pytest.approx(expected, abs=2.0)
        centres.append(centre)
    assert centres[1] < centres[0] - 3
