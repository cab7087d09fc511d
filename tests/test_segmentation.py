"""Segmentation: presets on the sample knee, synthetic phantoms and real CT; external models.

Synthetic phantoms are built here with numpy in the axial frame ``read_series`` produces
(slice -> +z Superior, row -> +y Posterior, col -> +x Left), with partial volume (a linear
ramp over the voxel's extent along the surface normal) and Gaussian noise of 15 HU, like
``sample_data``. HU values follow ``segmentation.presets``: soft tissue 40, cortical bone
1400, cancellous bone 300, fatty marrow -50, air -1000.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from holo import PipelineError, read_series
from holo.volume import Volume
from segmentation import LabelMap, segment
from segmentation.external import (
    TOTALSEGMENTATOR,
    segment_external,
    segment_totalsegmentator,
)

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "tests" / "external_model_threshold.py"

Array = npt.NDArray[np.float64]

SOFT, CORTEX, CANCELLOUS, MARROW, AIR = 40.0, 1400.0, 300.0, -50.0, -1000.0


# --------------------------------------------------------------------------- helpers


def _centres(volume: Volume) -> tuple[Array, Array, Array]:
    """LPS x, y, z (mm) of every voxel centre, each shaped like the volume."""
    k, j, i = (np.arange(n, dtype=np.float64) for n in volume.shape)
    a = volume.affine
    xyz = [
        a[r, 0] * k[:, None, None]
        + a[r, 1] * j[None, :, None]
        + a[r, 2] * i[None, None, :]
        + a[r, 3]
        for r in range(3)
    ]
    x, y, z = np.broadcast_arrays(*xyz)
    return x, y, z


def _axial(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Volume:
    """An empty (air) axial volume; origin off zero so geometry mistakes show."""
    sz, sy, sx = spacing
    affine = np.eye(4)
    affine[:3, :3] = [[0, 0, sx], [0, sy, 0], [sz, 0, 0]]
    affine[:3, 3] = (-40.0, -30.0, 100.0)
    return Volume(array=np.full(shape, AIR), affine=affine)


def _fraction(distance: Array, width: Array | float) -> Array:
    """Partial volume: fraction of a voxel inside a surface at signed ``distance`` (mm)."""
    return np.clip(0.5 - distance / width, 0.0, 1.0)


def _tube(
    x: Array, y: Array, cx: float, cy: float, r: float, spacing: tuple[float, ...]
) -> tuple[Array, Array]:
    """Signed distance to an infinite cylinder along z, and the voxel width along its normal."""
    dx, dy = x - cx, y - cy
    rho = np.hypot(dx, dy) + 1e-9
    width = (np.abs(dx) * spacing[2] + np.abs(dy) * spacing[1]) / rho
    return rho - r, np.maximum(width, min(spacing))


def _capsule(
    xyz: tuple[Array, Array, Array],
    z0: float,
    z1: float,
    cx: float,
    cy: float,
    r: float,
    spacing: tuple[float, ...],
) -> tuple[Array, Array]:
    """Signed distance to a capsule along z (segment z0..z1 at (cx, cy), radius r)."""
    x, y, z = xyz
    dx, dy, dz = x - cx, y - cy, z - np.clip(z, z0, z1)
    rho = np.sqrt(dx * dx + dy * dy + dz * dz) + 1e-9
    width = (np.abs(dx) * spacing[2] + np.abs(dy) * spacing[1] + np.abs(dz) * spacing[0]) / rho
    return rho - r, np.maximum(width, min(spacing))


def _add(hu: Array, shape: tuple[Array, Array], inside_hu: float, around_hu: float) -> Array:
    """Put tissue ``inside_hu`` into a shape drawn where the tissue was ``around_hu``."""
    return hu + _fraction(*shape) * (inside_hu - around_hu)


def _finish(empty: Volume, hu: Array, seed: int = 0) -> Volume:
    noise = np.random.default_rng(seed).normal(0.0, 15.0, hu.shape)
    array = np.clip(np.round(hu + noise), -1024, 3071).astype(np.int16)
    return Volume(array=array, affine=empty.affine)


def _body(x: Array, y: Array, cx: float, cy: float, r: float, spacing: tuple[float, ...]) -> Array:
    """Air with a soft-tissue cylinder along z (the limb)."""
    return _add(np.full(x.shape, AIR), _tube(x, y, cx, cy, r, spacing), SOFT, AIR)


def _label_at(labels: LabelMap, volume: Volume, lps: tuple[float, float, float]) -> int:
    index = np.round(volume.lps_to_index(lps)).astype(int)
    return int(labels.labels[tuple(index)])


# ---------------------------------------------------------------- the sample knee


@pytest.fixture(scope="module")
def truth(sample_ct: Path) -> dict:
    return json.loads((sample_ct.parent / "truth.json").read_text())


@pytest.fixture(scope="module")
def knee(sample_ct: Path) -> Volume:
    return read_series(sample_ct)


@pytest.fixture(scope="module")
def knee_xyz(knee: Volume) -> tuple[Array, Array, Array]:
    return _centres(knee)


@pytest.fixture(scope="module")
def knee_bones(knee: Volume) -> LabelMap:
    return segment(knee)


@pytest.fixture(scope="module")
def knee_couch(truth: dict, knee_xyz: tuple[Array, Array, Array]) -> npt.NDArray[np.bool_]:
    """Voxels whose centre lies in the couch tray (truth: an annulus arc along z)."""
    couch = truth["couch"]
    x, y, _ = knee_xyz
    cx, cy = couch["centre_x_y_lps_mm"]
    rho = np.hypot(x - cx, y - cy)
    radius, thickness = couch["radius_mm"], couch["thickness_mm"]
    return (
        (rho >= radius + 0.5)  # a voxel-half inside the tray: no partial volume with air
        & (rho <= radius + thickness - 0.5)
        & (y > cy)
        & (np.abs(x - cx) <= couch["half_width_mm"] - 0.5)
    )


def _match_bones(labels: LabelMap, volume: Volume, truth: dict) -> dict[str, int]:
    """Truth bone name -> label, by nearest centroid."""
    centroids = {
        label: volume.index_to_lps(np.argwhere(labels.labels == label).mean(axis=0))
        for label in labels.names
    }
    return {
        name: min(
            centroids, key=lambda lab: np.linalg.norm(centroids[lab] - bone["centroid_lps_mm"])
        )
        for name, bone in truth["bones"].items()
    }


def _distance_to_axis(xyz: tuple[Array, Array, Array], bone: dict) -> Array:
    """Distance (mm) of voxel centres to a capsule bone's axis segment."""
    a = np.asarray(bone["segment_start_lps_mm"])
    b = np.asarray(bone["segment_end_lps_mm"])
    ab = b - a
    p = [c - a[n] for n, c in enumerate(xyz)]
    t = np.clip((p[0] * ab[0] + p[1] * ab[1] + p[2] * ab[2]) / (ab @ ab), 0.0, 1.0)
    return np.sqrt(sum((p[n] - t * ab[n]) ** 2 for n in range(3)))


def test_knee_has_three_bones_largest_first_at_the_truth_centroids(
    knee_bones: LabelMap, knee: Volume, truth: dict
) -> None:
    assert sorted(knee_bones.names) == [1, 2, 3]
    counts = knee_bones.counts()
    assert counts[1] > counts[2] > counts[3]  # ordered by size
    assert knee_bones.labels.shape == knee.shape
    np.testing.assert_array_equal(knee_bones.affine, knee.affine)
    matched = _match_bones(knee_bones, knee, truth)
    # femur > tibia > patella by volume, so the size order is the anatomical one here.
    assert matched == {"femur": 1, "tibia": 2, "patella": 3}
    for name, label in matched.items():
        centroid = knee.index_to_lps(np.argwhere(knee_bones.labels == label).mean(axis=0))
        assert np.linalg.norm(centroid - truth["bones"][name]["centroid_lps_mm"]) < 2.0, name


def test_knee_bone_volumes_match_the_analytic_capsules(
    knee_bones: LabelMap, knee: Volume, truth: dict
) -> None:
    # The mask grows to the 150 HU edge, i.e. takes in every boundary voxel with >= ~8 % bone
    # ((150 - 40) / (1400 - 40)), so it is larger than the capsule by a shell of up to one
    # voxel: measured +0.35 mm (femur, tibia: surfaces facing 0.8 mm in-plane voxels) and
    # +0.56 mm (patella: lying across 1.5 mm slices), i.e. +5.7 %, +6.4 %, +14.8 %. The bound
    # [V, V + 0.75 mm x A] catches a hollow shell (-36 % to -64 %), a missing end, the couch or
    # a neighbour merged in, and a mask one voxel too fat (+0.8 mm x A).
    matched = _match_bones(knee_bones, knee, truth)
    voxel = knee_bones.voxel_volume_mm3()
    for name, label in matched.items():
        bone = truth["bones"][name]
        volume = knee_bones.counts()[label] * voxel
        outer, area = bone["outer_volume_mm3"], bone["outer_surface_area_mm2"]
        assert outer <= volume <= outer + 0.75 * area, (name, volume / outer)


def test_knee_bones_are_solid_marrow_filled_and_end_at_the_surface(
    knee_bones: LabelMap, knee: Volume, knee_xyz: tuple[Array, Array, Array], truth: dict
) -> None:
    matched = _match_bones(knee_bones, knee, truth)
    half_diagonal = 0.5 * float(np.linalg.norm(knee.spacing))  # 0.94 mm
    for name, label in matched.items():
        bone = truth["bones"][name]
        distance = _distance_to_axis(knee_xyz, bone)
        inner = distance <= bone["inner_radius_mm"] - half_diagonal  # cancellous, not cortex
        solid = distance <= bone["radius_mm"] - half_diagonal
        outside = distance >= bone["radius_mm"] + half_diagonal + 0.5
        assert inner.sum() > 1000
        assert np.all(knee_bones.labels[inner] == label), name  # filled, not a hollow shell
        assert np.all(knee_bones.labels[solid] == label), name
        assert not np.any(knee_bones.labels[outside] == label), name
    # The femur's axis between the shells, explicitly: every point on it is femur.
    femur = truth["bones"]["femur"]
    for t in np.linspace(0.0, 1.0, 11):
        point = (1 - t) * np.asarray(femur["segment_start_lps_mm"]) + t * np.asarray(
            femur["segment_end_lps_mm"]
        )
        assert _label_at(knee_bones, knee, tuple(point)) == matched["femur"]


def test_knee_couch_is_in_no_label(
    knee_bones: LabelMap, knee: Volume, knee_couch: npt.NDArray[np.bool_], truth: dict
) -> None:
    assert knee_couch.sum() > 10_000
    # The geometry is right: these voxels really hold the couch's HU.
    assert np.mean(knee.array[knee_couch]) == pytest.approx(truth["hu"]["couch"], abs=5)
    assert not knee_bones.labels[knee_couch].any()


@pytest.fixture(scope="module")
def knee_skin(knee: Volume) -> LabelMap:
    return segment(knee, "skin")


def _ellipse_level(xyz: tuple[Array, Array, Array], truth: dict, grow_mm: float) -> Array:
    """<= 1 inside the body's skin ellipse grown by ``grow_mm`` (negative shrinks it)."""
    x, y, _ = xyz
    cx, cy, _ = truth["frames"]["knee_centre_lps_mm"]
    a, b = truth["soft_tissue"]["skin_semi_axes_x_y_mm"]
    return ((x - cx) / (a + grow_mm)) ** 2 + ((y - cy) / (b + grow_mm)) ** 2


def test_skin_is_the_whole_body_without_couch_or_air(
    knee_skin: LabelMap,
    knee_xyz: tuple[Array, Array, Array],
    knee_couch: npt.NDArray[np.bool_],
    truth: dict,
) -> None:
    assert knee_skin.names == {1: "skin"}
    inside = _ellipse_level(knee_xyz, truth, -1.0) <= 1  # the body, bones included
    outside = _ellipse_level(knee_xyz, truth, +1.0) > 1  # air and couch
    assert np.all(knee_skin.labels[inside] == 1)
    assert not knee_skin.labels[outside].any()
    assert not knee_skin.labels[knee_couch].any()


@pytest.fixture(scope="module")
def knee_soft_tissue(knee: Volume) -> LabelMap:
    return segment(knee, "soft_tissue")


def test_soft_tissue_is_lean_tissue_without_bone_couch_or_air(
    knee_soft_tissue: LabelMap,
    knee_bones: LabelMap,
    knee_xyz: tuple[Array, Array, Array],
    knee_couch: npt.NDArray[np.bool_],
    truth: dict,
) -> None:
    soft = knee_soft_tissue.labels == 1
    assert knee_soft_tissue.names == {1: "soft_tissue"}
    assert not np.any(soft & (knee_bones.labels > 0))  # bone voxels excluded
    assert not soft[knee_couch].any()
    assert not soft[_ellipse_level(knee_xyz, truth, +1.0) > 1].any()
    # Muscle (40 HU): inside the lean ellipse and 1.5 mm clear of every bone.
    x, y, _ = knee_xyz
    cx, cy, _ = truth["frames"]["knee_centre_lps_mm"]
    a, b = truth["soft_tissue"]["lean_semi_axes_x_y_mm"]
    lean = ((x - cx) / (a - 1)) ** 2 + ((y - cy) / (b - 1)) ** 2 <= 1
    for bone in truth["bones"].values():
        lean &= _distance_to_axis(knee_xyz, bone) >= bone["radius_mm"] + 1.5
    assert lean.sum() > 100_000
    assert soft[lean].mean() > 0.999


def test_soft_tissue_excludes_subcutaneous_fat(
    knee_soft_tissue: LabelMap, knee_xyz: tuple[Array, Array, Array], truth: dict
) -> None:
    x, y, _ = knee_xyz
    cx, cy, _ = truth["frames"]["knee_centre_lps_mm"]
    a, b = truth["soft_tissue"]["lean_semi_axes_x_y_mm"]
    fat = (((x - cx) / (a + 1)) ** 2 + ((y - cy) / (b + 1)) ** 2 > 1) & (
        _ellipse_level(knee_xyz, truth, -1.0) <= 1
    )
    assert (knee_soft_tissue.labels[fat] > 0).mean() < 0.05


def test_segment_refuses_an_unknown_preset_and_non_hu_images(knee: Volume) -> None:
    with pytest.raises(PipelineError, match="unknown preset 'cartilage'; choose one of bone"):
        segment(knee, "cartilage")
    not_ct = Volume(array=knee.array, affine=knee.affine, units="unspecified")
    with pytest.raises(PipelineError, match="need CT in HU"):
        segment(not_ct)


# ------------------------------------------------------------ synthetic phantoms


def _cylinder(
    xyz: tuple[Array, Array, Array],
    z0: float,
    z1: float,
    cx: float,
    cy: float,
    r: float,
    spacing: tuple[float, ...],
) -> tuple[Array, Array]:
    """Signed distance to a flat-ended cylinder along z, and the voxel width along its normal."""
    x, y, z = xyz
    side, width = _tube(x, y, cx, cy, r, spacing)
    cap = np.maximum(z0 - z, z - z1)
    return np.maximum(side, cap), np.where(side >= cap, width, spacing[0])


def _joint(ends: str, gap_mm: float, slice_mm: float) -> tuple[Volume, float]:
    """Two bones end to end along z, ``gap_mm`` of soft tissue between their ends.

    ``ends`` is "round" (capsules: convex, condyle-like joint surfaces) or "flat" (broad
    parallel joint surfaces). A negative gap overlaps them: one bone with a bony bridge.
    Returns the volume and the z (mm) of the middle of the joint space.
    """
    spacing = (slice_mm, 0.5, 0.5)
    r, length = 8.0, 24.0  # radius, end-to-end length of each bone; cortex 2 mm
    empty = _axial((round((2 * length + gap_mm + 12) / slice_mm), 88, 88), spacing)
    x, y, z = _centres(empty)
    cx, cy = float(x.mean()), float(y.mean())
    z_joint = float(z.mean())
    hu = _body(x, y, cx, cy, 20.0, spacing)
    for sign in (-1, 1):
        near_end = z_joint + sign * gap_mm / 2
        far_end = near_end + sign * length
        if ends == "round":  # the capsule's segment stops a radius short of its ends
            z0, z1 = sorted((near_end + sign * r, far_end - sign * r))
            outer = _capsule((x, y, z), z0, z1, cx, cy, r, spacing)
            inner = _capsule((x, y, z), z0, z1, cx, cy, r - 2.0, spacing)
        else:
            z0, z1 = sorted((near_end, far_end))
            outer = _cylinder((x, y, z), z0, z1, cx, cy, r, spacing)
            inner = _cylinder((x, y, z), z0 + 2.0, z1 - 2.0, cx, cy, r - 2.0, spacing)
        hu = _add(hu, outer, CORTEX, SOFT)
        hu = _add(hu, inner, CANCELLOUS, CORTEX)
    return _finish(empty, hu), z_joint


@pytest.mark.parametrize(
    ("ends", "gap_mm", "slice_mm", "bones"),
    [
        pytest.param("round", 0.8, 0.5, 2, id="round-0.8mm-gap-0.5mm-slices-splits"),
        pytest.param("round", 0.8, 1.0, 2, id="round-0.8mm-gap-1mm-slices-splits"),
        pytest.param("flat", 1.2, 0.5, 2, id="flat-1.2mm-gap-splits"),
        pytest.param("flat", 0.3, 0.5, 1, id="flat-0.3mm-gap-fused-stays-one"),
        pytest.param("round", -2.0, 0.5, 1, id="bony-bridge-stays-one"),
    ],
)
def test_bones_at_a_joint_split_where_the_mask_narrows_or_parts(
    ends: str, gap_mm: float, slice_mm: float, bones: int
) -> None:
    # Documented (presets.BonePreset): bones are split where an erosion of split_erosion_mm
    # (1.5 mm) cuts the 150 HU mask. Measured here (radius 8 mm, noise 15 HU):
    # - convex (condyle-like) ends: partial volume bridges a 0.3-0.8 mm joint space only
    #   near the point of closest approach, a narrow neck the erosion cuts: two bones;
    # - broad flat ends: a gap is bridged across the whole surface (no narrow place) until a
    #   full voxel of soft tissue lies in it (1.2 mm on 0.5 mm slices, 2 mm on 1 mm); a
    #   0.3 mm gap there is fused at this resolution and stays one bone (so does 1.5 mm on
    #   1 mm slices, a limit of the method);
    # - a 2 mm bony bridge (overlapping ends, a 3.9 mm-radius waist) stays one bone.
    volume, z_joint = _joint(ends, gap_mm, slice_mm)
    labels = segment(volume)
    assert len(labels.names) == bones
    x, y, z = _centres(volume)
    cx, cy = float(x.mean()), float(y.mean())
    lower = _label_at(labels, volume, (cx, cy, z_joint - 15.0))
    upper = _label_at(labels, volume, (cx, cy, z_joint + 15.0))
    assert lower > 0 and upper > 0
    if bones == 1:
        assert lower == upper
        return
    assert lower != upper
    # Each label is one bone: it stays on its side of the joint (to within one slice).
    assert z[labels.labels == lower].max() <= z_joint + slice_mm
    assert z[labels.labels == upper].min() >= z_joint - slice_mm
    counts = labels.counts()
    assert counts[lower] == pytest.approx(counts[upper], rel=0.05)


@pytest.mark.parametrize(
    "vessel_hu",
    [
        300.0,
        400.0,
        450.0,
    ],
)
def test_contrast_vessel_beside_a_bone_is_left_out(vessel_hu: float) -> None:
    # A contrast-filled vessel (radius 3 mm) runs 2 mm beside a long bone: it is above the
    # growing threshold (150 HU) but holds no seed (>= 500 HU) and does not touch cortex.
    # (Measured on 0.5 mm pixels: 0.5-1 mm of soft tissue between them keeps the vessel
    # out, depending on how the gap falls on the grid; touching, or 0.25 mm apart, partial
    # volume joins it to the cortex and it is grown into the bone, as documented.)
    spacing = (1.0, 0.5, 0.5)
    empty = _axial((24, 100, 100), spacing)
    x, y, _ = _centres(empty)
    cx, cy = float(x.mean()), float(y.mean())
    bone_x, vessel_x = cx - 8.0, cx + 2.0 + 3.0
    hu = _body(x, y, cx, cy, 22.0, spacing)
    hu = _add(hu, _tube(x, y, bone_x, cy, 8.0, spacing), CORTEX, SOFT)
    hu = _add(hu, _tube(x, y, bone_x, cy, 6.0, spacing), CANCELLOUS, CORTEX)
    hu = _add(hu, _tube(x, y, vessel_x, cy, 3.0, spacing), vessel_hu, SOFT)
    volume = _finish(empty, hu)
    labels = segment(volume)
    assert list(labels.names) == [1]
    vessel = np.hypot(x - vessel_x, y - cy) <= 3.0
    bone = np.hypot(x - bone_x, y - cy) <= 7.5
    assert np.mean(volume.array[vessel]) > 250  # the vessel is there, above 150 HU
    assert not labels.labels[vessel].any()
    assert np.all(labels.labels[bone] == 1)


def test_marrow_of_an_open_long_bone_is_filled_but_not_a_skull_sized_cavity() -> None:
    # Both run through the whole volume (open at both ends), so only the per-slice fill can
    # close them: a shaft's fatty marrow (-50 HU, hole 113 mm²) is filled; a ring whose
    # hole (1735 mm²) is above max_marrow_area_mm2 (1500), like a skull round the brain, is not.
    spacing = (1.0, 0.6, 0.6)
    empty = _axial((20, 130, 220), spacing)
    x, y, _ = _centres(empty)
    cx, cy = float(x.mean()), float(y.mean())
    shaft_x, ring_x = cx - 40.0, cx + 25.0
    body = ((x - cx) / 64.0) ** 2 + ((y - cy) / 36.0) ** 2 <= 1  # elliptic limb / head
    hu = np.where(body, SOFT, AIR)
    hu = _add(hu, _tube(x, y, shaft_x, cy, 9.0, spacing), CORTEX, SOFT)
    hu = _add(hu, _tube(x, y, shaft_x, cy, 6.0, spacing), MARROW, CORTEX)
    hu = _add(hu, _tube(x, y, ring_x, cy, 26.0, spacing), CORTEX, SOFT)
    hu = _add(hu, _tube(x, y, ring_x, cy, 23.5, spacing), SOFT, CORTEX)
    volume = _finish(empty, hu)
    labels = segment(volume)
    assert len(labels.names) == 2
    marrow = np.hypot(x - shaft_x, y - cy) <= 5.5
    cavity = np.hypot(x - ring_x, y - cy) <= 23.0
    ring_wall = np.abs(np.hypot(x - ring_x, y - cy) - 24.75) <= 0.75
    assert np.mean(volume.array[marrow]) < 0  # fatty marrow, below any bone threshold
    assert np.all(labels.labels[marrow] > 0)
    assert np.all(labels.labels[ring_wall] > 0)
    assert not labels.labels[cavity].any()


def test_a_volume_without_bone_raises_naming_its_hu_range() -> None:
    spacing = (2.0, 1.0, 1.0)
    empty = _axial((10, 60, 60), spacing)
    x, y, _ = _centres(empty)
    cx, cy = float(x.mean()), float(y.mean())
    hu = _body(x, y, cx, cy, 25.0, spacing)
    hu = _add(hu, _tube(x, y, cx, cy, 4.0, spacing), 300.0, SOFT)  # a vessel is not bone
    volume = _finish(empty, hu)
    low, high = int(volume.array.min()), int(volume.array.max())
    with pytest.raises(PipelineError, match=rf"no bone .*HU range {low}\.\.{high}\b"):
        segment(volume)


def _couch_phantom(gap_mm: float, bridge_mm: float) -> tuple[Volume, dict[str, np.ndarray]]:
    """A limb with a bone, a couch plate (200 HU, with a 900 HU rail) ``gap_mm`` below it,
    joined to the skin by a soft-tissue bridge ``bridge_mm`` wide (0: no bridge)."""
    spacing = (1.5, 0.8, 0.8)
    empty = _axial((24, 120, 130), spacing)
    x, y, _ = _centres(empty)
    cx, cy, r = float(x.mean()), float(y.min()) + 42.0, 25.0
    hu = _body(x, y, cx, cy, r, spacing)
    hu = _add(hu, _tube(x, y, cx, cy, 6.0, spacing), CORTEX, SOFT)
    hu = _add(hu, _tube(x, y, cx, cy, 4.0, spacing), CANCELLOUS, CORTEX)
    top = cy + r + gap_mm  # posterior (+y) of the skin
    plate = (y >= top) & (y < top + 6.0) & (np.abs(x - cx) <= 40.0)
    rail = plate & (np.abs(x - (cx - 35.0)) <= 3.0)
    bridge = (np.abs(x - cx) <= bridge_mm / 2) & (y > cy) & (y < top) & (hu < -500)
    hu = np.where(plate, 200.0, hu)
    hu = np.where(rail, 900.0, hu)
    hu = np.where(bridge, SOFT, hu)
    masks = {
        "body": np.hypot(x - cx, y - cy) <= r - 1.0,
        "plate": plate,
        "rail": rail,
        "bone": np.hypot(x - cx, y - cy) <= 5.5,
    }
    return _finish(empty, hu), masks


def test_couch_joined_to_the_skin_by_a_thin_bridge_is_removed() -> None:
    volume, masks = _couch_phantom(gap_mm=8.0, bridge_mm=2.0)
    skin = segment(volume, "skin")
    assert np.all(skin.labels[masks["body"]] == 1)
    assert not skin.labels[masks["plate"]].any()
    bones = segment(volume)
    assert list(bones.names) == [1]  # the dense rail is not a bone
    assert np.all(bones.labels[masks["bone"]] == 1)
    assert not bones.labels[masks["plate"]].any()


def test_couch_3mm_below_the_skin_is_removed() -> None:
    volume, masks = _couch_phantom(gap_mm=3.0, bridge_mm=0.0)
    skin = segment(volume, "skin")
    assert not skin.labels[masks["plate"]].any()
    assert list(segment(volume).names) == [1]


# ------------------------------------------------------------------------- real CT


def _one_skull(labels: LabelMap, volume: Volume) -> None:
    """Label 1 is a whole skull: head-sized, and the brain inside it is not filled."""
    where = np.argwhere(labels.labels == 1)
    points = volume.index_to_lps(where)
    extent = points.max(axis=0) - points.min(axis=0)
    assert extent[0] > 120.0  # left-right
    assert extent[1] > 150.0  # anterior-posterior
    centre = (where.min(axis=0) + where.max(axis=0)) // 2
    half = np.maximum(1, np.round(10.0 / np.asarray(volume.spacing))).astype(int)
    box = tuple(slice(c - h, c + h + 1) for c, h in zip(centre, half, strict=True))
    assert not labels.labels[box].any()  # a 20 mm cube in the cranium: brain, not bone


@pytest.mark.slow
def test_skull_phantom_is_one_bone(shared_data: Path) -> None:
    volume = read_series(shared_data / "ct_skull_phantom_philips_bone_1mm")
    labels = segment(volume)  # ~15-25 s: 512 x 512 x 140
    assert list(labels.names) == [1]  # the skull, not split at its sutures or base
    _one_skull(labels, volume)


def test_tilted_head_is_one_big_bone(shared_data: Path) -> None:
    volume = read_series(shared_data / "ct_head_ge_gantry_tilt_variable_spacing")
    labels = segment(volume)
    counts = labels.counts()
    assert counts[1] >= 0.9 * sum(counts.values())
    _one_skull(labels, volume)


# ----------------------------------------------------------- external-model contract


@pytest.fixture(scope="module")
def oblique() -> Volume:
    """A small random volume on an oblique, anisotropic grid far from the origin: any axis,
    direction or origin mistake in the NIfTI round trip changes which voxel is which."""
    rng = np.random.default_rng(3)
    array = rng.integers(-1000, 2000, size=(12, 30, 22)).astype(np.int16)
    a, b = np.radians(17.0), np.radians(5.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    axes = rz @ rx @ np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]])  # columns: slice, row, col
    affine = np.eye(4)
    affine[:3, :3] = axes * np.array([2.5, 0.7, 0.9])
    affine[:3, 3] = (-123.456, 78.9, -654.321)
    return Volume(array=array, affine=affine)


def _expected(volume: Volume) -> np.ndarray:
    """What tests/external_model_threshold.py computes: 1 at >= 300, 7 at >= 1000."""
    return np.where(volume.array >= 1000, 7, np.where(volume.array >= 300, 1, 0))


def _model(mode: str = "threshold") -> list[str]:
    return [sys.executable, str(MODEL), "{input}", "{output}", "--mode", mode]


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Route tempfile to an empty folder, to check that nothing is left behind."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_external_model_gives_a_label_map_on_the_volume_grid(
    oblique: Volume, private_tmp: Path
) -> None:
    labels = segment_external(oblique, _model())
    np.testing.assert_array_equal(labels.labels, _expected(oblique))
    assert labels.labels.dtype == np.uint8
    np.testing.assert_array_equal(labels.affine, oblique.affine)
    assert labels.names == {1: "label_1", 7: "label_7"}
    assert labels.source["external"] == sys.executable
    assert labels.source["command"] == _model()  # placeholders, not temporary paths
    assert labels.source["resampled_from"] is None  # float32 NIfTI geometry is within tolerance
    assert list(private_tmp.iterdir()) == []


def test_external_names_come_from_the_argument_then_the_files_label_table(
    oblique: Volume,
) -> None:
    labels = segment_external(oblique, _model("table"), names={7: "cortical_bone", 5: "unused"})
    # 7 from the argument, 1 from the table in the file; 9 (in the table) and 5 (in the
    # argument) are absent from the voxels, so they are not structures.
    assert labels.names == {1: "cancellous", 7: "cortical_bone"}
    assert labels.source["label_table"] is True
    np.testing.assert_array_equal(labels.labels, _expected(oblique))


def test_external_whole_number_floats_are_accepted(oblique: Volume) -> None:
    labels = segment_external(oblique, _model("integral-float"))
    np.testing.assert_array_equal(labels.labels, _expected(oblique))


@pytest.mark.parametrize("mode", ["crop", "ras"])
def test_external_labels_on_another_grid_are_resampled_onto_the_volume(
    oblique: Volume, mode: str, private_tmp: Path
) -> None:
    # "crop": the middle half of the grid only; "ras": the same voxels reoriented to RAS
    # (another direction and origin). Same physical space, so nearest neighbour is exact.
    labels = segment_external(oblique, _model(mode))
    expected = _expected(oblique)
    if mode == "crop":  # the script keeps voxels [n // 4, n // 4 + n // 2) on every axis
        keep = np.zeros(expected.shape, dtype=bool)
        keep[tuple(slice(n // 4, n // 4 + n // 2) for n in expected.shape)] = True
        expected = np.where(keep, expected, 0)
    np.testing.assert_array_equal(labels.labels, expected)
    assert labels.labels.shape == oblique.shape
    assert labels.source["resampled_from"] is not None
    assert list(private_tmp.iterdir()) == []


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("fail", r"exited with status 3: ERROR: model weights not found; run the download"),
        ("none", r"wrote no label map"),
        ("garbage", r"not readable NIfTI"),
        ("empty", r"labelled nothing in the volume"),
        ("folder", r"wrote a folder .*--ml"),
        ("flat", r"wrote a 2-D image"),
        ("float", r"non-integer values"),
        ("elsewhere", r"outside the volume's space"),
    ],
)
def test_external_model_failures_raise_and_leave_nothing_behind(
    oblique: Volume, mode: str, message: str, private_tmp: Path
) -> None:
    with pytest.raises(PipelineError, match=message) as error:
        segment_external(oblique, _model(mode))
    assert sys.executable in str(error.value)  # names the command
    assert "\n" not in str(error.value)  # one line
    assert list(private_tmp.iterdir()) == []


def test_external_command_problems_are_pipeline_errors(oblique: Volume, private_tmp: Path) -> None:
    with pytest.raises(PipelineError, match="'holo-no-such-model' was not found"):
        segment_external(oblique, ["holo-no-such-model", "{input}", "{output}"])
    with pytest.raises(PipelineError, match=r"no \{output\} placeholder"):
        segment_external(oblique, [sys.executable, str(MODEL), "{input}"])
    with pytest.raises(TypeError, match="sequence of arguments"):
        segment_external(oblique, "TotalSegmentator -i {input} -o {output}")  # type: ignore[arg-type]
    assert list(private_tmp.iterdir()) == []


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie, killed but not yet reaped, does not count)."""
    stat_file = Path(f"/proc/{pid}/stat")
    if not stat_file.exists():
        return False
    try:
        return stat_file.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_external_model_timeout_stops_it_and_what_it_started(
    oblique: Volume, private_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "model.log"
    monkeypatch.setenv("HOLO_EXTERNAL_MODEL_LOG", str(log))
    started = time.monotonic()
    with pytest.raises(PipelineError, match=r"did not finish within 3 s and was stopped"):
        segment_external(oblique, _model("sleep"), timeout_s=3)
    assert time.monotonic() - started < 30  # it sleeps 120 s if not stopped
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    child = next(e["child_pid"] for e in entries if "child_pid" in e)
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)
    assert list(private_tmp.iterdir()) == []


def test_totalsegmentator_missing_says_how_to_install_it(
    oblique: Volume, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An empty PATH makes it missing here even where it is installed.
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PipelineError, match=r"TotalSegmentator is not installed") as error:
        segment_totalsegmentator(oblique)
    assert "pip install TotalSegmentator" in str(error.value)
    assert "bone preset" in str(error.value)


@pytest.fixture
def fake_totalsegmentator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Put a 'TotalSegmentator' on PATH that runs tests/external_model_threshold.py."""
    if os.name != "posix":
        pytest.skip("the stand-in TotalSegmentator is a POSIX shell script")
    folder = tmp_path / "bin"
    folder.mkdir()
    log = tmp_path / "model.log"
    monkeypatch.setenv("HOLO_EXTERNAL_MODEL_LOG", str(log))
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")

    def install(mode: str) -> Path:
        script = folder / "TotalSegmentator"
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{MODEL}" --mode {mode} "$@"\n')
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
        assert shutil.which("TotalSegmentator") == str(script)
        return log

    return install


def test_totalsegmentator_command_and_names_from_its_label_table(
    oblique: Volume, fake_totalsegmentator
) -> None:
    log = fake_totalsegmentator("totalseg")
    labels = segment_totalsegmentator(oblique)
    argv = json.loads(log.read_text().splitlines()[0])["argv"]
    assert argv[:2] == ["--mode", "totalseg"]
    assert [argv[2], argv[4], argv[6], argv[7]] == ["-i", "-o", "--ml", "--fast"]
    assert argv[3].endswith(".nii") and argv[5].endswith(".nii.gz")
    assert list(TOTALSEGMENTATOR) == ["TotalSegmentator", "-i", "{input}", "-o", "{output}", "--ml"]
    assert labels.names == {75: "femur_left", 92: "rib_left_1"}  # from the file's table


@pytest.mark.parametrize(
    ("extra_args", "names"),
    [
        pytest.param((), {75: "femur_left", 92: "label_92"}, id="built-in-bone-names"),
        pytest.param(
            ("-ta", "appendicular_bones"), {75: "label_75", 92: "label_92"}, id="other-task"
        ),
    ],
)
def test_totalsegmentator_without_a_label_table(
    oblique: Volume, fake_totalsegmentator, extra_args: tuple[str, ...], names: dict[int, str]
) -> None:
    # Without a table, bones of the 'total' task get their TotalSegmentator 2 names (ribs,
    # renumbered between its versions, do not); another task's numbers are not guessed.
    log = fake_totalsegmentator("totalseg-no-table")
    labels = segment_totalsegmentator(oblique, extra_args=extra_args, fast=False)
    argv = json.loads(log.read_text().splitlines()[0])["argv"]
    assert "--fast" not in argv
    assert argv[len(argv) - len(extra_args) :] == list(extra_args)
    assert labels.names == names
