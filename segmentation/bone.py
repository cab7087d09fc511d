"""Body and bone segmentation of CT, better than one threshold (see presets for numbers)."""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk

from segmentation.masks import (
    fill_holes_per_slice,
    keep_largest,
    radius_voxels,
    remove_small,
    voxel_count,
)
from segmentation.presets import BodyPreset, BonePreset

__all__ = ["label_bones", "segment_body", "segment_bone_mask"]

logger = logging.getLogger(__name__)


def _coarse(mask: sitk.Image, step_mm: float) -> sitk.Image:
    """A binary mask on a grid of about ``step_mm`` voxels (a voxel is in if half is)."""
    factors = [
        min(max(1, round(step_mm / s)), n)
        for s, n in zip(mask.GetSpacing(), mask.GetSize(), strict=True)
    ]
    if factors == [1, 1, 1]:
        return mask
    shrunk = sitk.BinShrink(sitk.Cast(mask, sitk.sitkFloat32), factors)
    return sitk.BinaryThreshold(shrunk, lowerThreshold=0.5, upperThreshold=1e9)


def segment_body(ct: sitk.Image, preset: BodyPreset) -> sitk.Image:
    """The patient's body: above ``body_hu``, the largest piece, couch and air removed.

    Parameters
    ----------
    ct
        CT in HU; spacing, origin and direction honoured (LPS, mm).

    Returns
    -------
    SimpleITK.Image
        uint8 mask on the same grid, solid: internal air (lungs, bowel, the empty inside
        of a phantom shell) is filled per axial slice.
    """
    above = sitk.BinaryThreshold(ct, lowerThreshold=preset.body_hu, upperThreshold=1e9)
    # Which piece is the patient is decided on a coarse grid (ball morphology at full
    # resolution costs seconds per operation); the boundary itself stays full resolution.
    coarse = _coarse(above, preset.grid_mm)
    # Bridge seams in thin shells before filling, so a ring fills to a disc; then the
    # opening cuts thin couch and head-holder connections and keeps the patient.
    coarse = sitk.BinaryMorphologicalClosing(coarse, radius_voxels(coarse, preset.closing_mm))
    coarse = fill_holes_per_slice(coarse)
    radius = radius_voxels(coarse, preset.opening_mm)
    core = keep_largest(sitk.BinaryMorphologicalOpening(coarse, radius))
    # Give back what the opening shaved off (plus one coarse voxel), not across to a couch.
    near = sitk.BinaryDilate(core, [r + 1 for r in radius])

    def full(mask: sitk.Image) -> sitk.Image:
        return sitk.Resample(
            mask, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
        )

    near_full = full(near)
    solid = fill_holes_per_slice(sitk.Or(above, sitk.And(full(coarse), near_full)))
    return keep_largest(sitk.And(solid, near_full))


def segment_bone_mask(ct: sitk.Image, preset: BonePreset) -> sitk.Image:
    """All bone (cortex, cancellous bone and marrow) as one uint8 mask."""
    top = float(sitk.GetArrayViewFromImage(ct).max())
    if top < preset.seed_hu:
        return sitk.Cast(ct * 0, sitk.sitkUInt8)  # no bone-dense voxel anywhere
    # Hysteresis: grow from cortex (>= seed) through voxels >= low; vessels with contrast
    # that do not touch cortex never get a seed.
    grown = sitk.DoubleThreshold(
        ct,
        threshold1=preset.low_hu,
        threshold2=preset.seed_hu,
        threshold3=top,
        threshold4=top,
        insideValue=1,
        outsideValue=0,
    )
    body = segment_body(ct, preset.body)
    bone = sitk.And(grown, body)
    # Fill the marrow: enclosed 3-D cavities, and per-slice rings up to the marrow limit
    # (the open ends of a cut shaft). No morphological closing at full resolution: it
    # costs ~4 s per 36 M voxels here and the two fills already catch the marrow.
    bone = sitk.BinaryFillhole(bone)
    bone = fill_holes_per_slice(bone, preset.max_marrow_area_mm2)
    return remove_small(bone, voxel_count(ct, preset.min_bone_mm3))


def _contact_mm2(parts: np.ndarray, a: int, b: int, spacing: tuple[float, ...]) -> float:
    """Area (mm²) of the voxel faces where part ``a`` touches part ``b`` (6-neighbours).

    ``parts`` is indexed (z, y, x); ``spacing`` is ITK's (x, y, z).
    """
    sx, sy, sz = spacing
    face = {0: sx * sy, 1: sx * sz, 2: sy * sz}  # faces normal to z, y, x
    total = 0.0
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        p, q = parts[tuple(lo)], parts[tuple(hi)]
        total += face[axis] * float(np.count_nonzero(((p == a) & (q == b)) | ((p == b) & (q == a))))
    return total


def _split_component(component: sitk.Image, preset: BonePreset, min_part: int) -> np.ndarray:
    """Split one connected bone mask into bones that meet at a joint.

    A split is proposed where an erosion of ``split_erosion_mm`` cuts the mask into big
    parts (watershed from those parts); it is kept only between parts whose contact is
    small next to the smaller part (contact < ``split_max_contact`` x volume^(2/3)): a joint
    bridged by partial volume, not a sheet of thin bone such as the skull's temporal squama.

    Returns
    -------
    numpy.ndarray
        Labels 1..n on the component's grid (z, y, x); n == 1 when nothing splits.
    """
    mask = sitk.GetArrayFromImage(component).astype(bool)
    eroded = sitk.BinaryErode(component, radius_voxels(component, preset.split_erosion_mm))
    markers = sitk.RelabelComponent(sitk.ConnectedComponent(eroded), minimumObjectSize=min_part)
    n_parts = int(sitk.GetArrayViewFromImage(markers).max())
    if n_parts < 2:
        return mask.astype(np.uint16)
    distance = sitk.SignedMaurerDistanceMap(
        component, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
    )
    flooded = sitk.MorphologicalWatershedFromMarkers(
        distance, sitk.Cast(markers, sitk.sitkUInt16), markWatershedLine=False, fullyConnected=False
    )
    parts = sitk.GetArrayFromImage(flooded).astype(np.uint16) * mask
    voxel = float(np.prod(component.GetSpacing()))
    volumes = {k: float(np.count_nonzero(parts == k)) * voxel for k in range(1, n_parts + 1)}
    group = list(range(n_parts + 1))  # union-find over parts

    def root(k: int) -> int:
        while group[k] != k:
            k = group[k]
        return k

    for a in range(1, n_parts + 1):
        for b in range(a + 1, n_parts + 1):
            contact = _contact_mm2(parts, a, b, component.GetSpacing())
            if contact > preset.split_max_contact * min(volumes[a], volumes[b]) ** (2 / 3):
                group[root(b)] = root(a)
    roots = sorted({root(k) for k in range(1, n_parts + 1)})
    relabel = np.zeros(n_parts + 1, dtype=np.uint16)
    for k in range(1, n_parts + 1):
        relabel[k] = roots.index(root(k)) + 1
    return relabel[parts]


def label_bones(bone: sitk.Image, preset: BonePreset) -> sitk.Image:
    """Label separate bones 1..n, largest first; touching bones split at narrow joints."""
    min_voxels = voxel_count(bone, preset.min_bone_mm3)
    components = sitk.RelabelComponent(
        sitk.ConnectedComponent(bone), minimumObjectSize=min_voxels, sortByObjectSize=True
    )
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(components)
    out = np.zeros(sitk.GetArrayViewFromImage(bone).shape, dtype=np.uint16)
    pieces: list[tuple[int, tuple[slice, ...], np.ndarray]] = []
    for label in stats.GetLabels():
        x0, y0, z0, nx, ny, nz = stats.GetBoundingBox(label)
        box = (slice(z0, z0 + nz), slice(y0, y0 + ny), slice(x0, x0 + nx))
        crop = sitk.RegionOfInterest(components == label, [nx, ny, nz], [x0, y0, z0])
        # A part must hold 5 % of its bone (and 10x the speck size) to count as a bone of
        # its own: small fragments shaved off by the erosion do not split anything.
        min_part = max(10 * min_voxels, int(0.05 * stats.GetNumberOfPixels(label)))
        parts = _split_component(crop, preset, min_part)
        for part in range(1, int(parts.max()) + 1):
            pieces.append((int((parts == part).sum()), box, parts == part))
    pieces.sort(key=lambda p: -p[0])
    for new_label, (_, where, part_mask) in enumerate(pieces, start=1):
        out[where][part_mask] = new_label
    labels = sitk.GetImageFromArray(out)
    labels.CopyInformation(bone)
    logger.info("bone: %d separate bones", len(pieces))
    return labels
