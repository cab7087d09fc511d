"""Body and bone segmentation of CT, better than one threshold (see presets for numbers)."""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from segmentation.masks import (
    at_least,
    dilate_mm,
    fill_holes_per_slice,
    fill_marrow,
    keep_largest,
    label_sizes,
    lookup,
    opening_mm,
    remove_small,
    voxel_count,
)
from segmentation.noise import soft_tissue_noise_hu
from segmentation.presets import BodyPreset, BonePreset

__all__ = ["label_bones", "segment_body", "segment_bone_mask"]

_SPLIT_GRID_MM = 1.0  # grid on which the joint-split decision is made

logger = logging.getLogger(__name__)


def _coarse(mask: sitk.Image, step_mm: float, *, any_voxel: bool = False) -> sitk.Image:
    """A binary mask on a grid of about ``step_mm`` voxels.

    A coarse voxel is in if half its fine voxels are, or if any is (``any_voxel``: keeps
    thin structures connected).
    """
    factors = [
        min(max(1, round(step_mm / s)), n)
        for s, n in zip(mask.GetSpacing(), mask.GetSize(), strict=True)
    ]
    if factors == [1, 1, 1]:
        return mask
    shrunk = sitk.BinShrink(sitk.Cast(mask, sitk.sitkFloat32), factors)
    level = 1e-6 if any_voxel else 0.5
    return sitk.BinaryThreshold(shrunk, lowerThreshold=level, upperThreshold=1e9)


def body_region(ct: sitk.Image, preset: BodyPreset) -> tuple[sitk.Image, sitk.Image]:
    """Where the patient is, on a coarse grid of about ``preset.grid_mm``: (body, near).

    ``body``: above ``body_hu``, filled per slice; ``near``: the largest
    piece after an opening (couch and head holders cut off), grown back by the opening's
    radius plus one coarse voxel. Morphology by distance maps on the coarse grid: ball
    kernels at full resolution cost seconds per operation (3.2 s on the skull at 1 mm).
    """
    above = at_least(ct, preset.body_hu)
    coarse = _coarse(above, preset.grid_mm)
    # The opening cuts thin couch and head-holder connections and keeps the patient.
    coarse = fill_holes_per_slice(coarse)
    core = keep_largest(opening_mm(coarse, preset.opening_mm))
    # Give back what the opening shaved off (plus one coarse voxel), not across to a couch.
    near = dilate_mm(core, preset.opening_mm + max(coarse.GetSpacing()))
    return coarse, near


def _on_grid_of(mask: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """A coarse mask resampled (nearest neighbour) onto the full grid."""
    return sitk.Resample(
        mask, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )


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
    coarse, near = body_region(ct, preset)
    # The piece is chosen on the coarse grid; the boundary itself is full resolution.
    above = at_least(ct, preset.body_hu)
    near_full = _on_grid_of(near, ct)
    solid = fill_holes_per_slice(sitk.Or(above, sitk.And(_on_grid_of(coarse, ct), near_full)))
    return keep_largest(sitk.And(solid, near_full))


def segment_bone_mask(
    ct: sitk.Image, preset: BonePreset, *, body: sitk.Image | None = None
) -> sitk.Image:
    """All bone (cortex, cancellous bone and marrow) as one uint8 mask.

    ``body``: the body mask when the caller already has it (from ``preset.body``).
    """
    top = float(sitk.GetArrayViewFromImage(ct).max())
    seed_hu = preset.seed_level(max(ct.GetSpacing()))
    if top < seed_hu:
        return sitk.Cast(ct * 0, sitk.sitkUInt8)  # no bone-dense voxel anywhere
    noise_hu = soft_tissue_noise_hu(ct)
    low_hu = preset.grow_level(noise_hu)
    logger.info(
        "bone: seed %.0f HU (%.2f mm slices), grow %.0f HU (noise %.1f HU)",
        seed_hu,
        ct.GetSpacing()[2],
        low_hu,
        noise_hu,
    )
    # Hysteresis: grow from cortex (>= seed) through voxels >= low; vessels with contrast
    # that do not touch cortex never get a seed. A seed is a cluster of at least
    # ``min_seed_mm3``: noise lifts single voxels of a 450 HU vessel over 500 HU, never a
    # cluster of them.
    seeds = remove_small(
        at_least(ct, seed_hu),
        voxel_count(ct, preset.min_seed_mm3),
    )
    if body is None:
        # Bone only needs to know where the patient is, not the skin to the voxel: the
        # coarse region is enough and saves the full-resolution refinement (1.5 s here).
        body = _on_grid_of(body_region(ct, preset.body)[1], ct)
    # The pieces of ``allowed`` (inside the body) that hold a seed: one labelling and a
    # lookup, a third of the time of ITK's reconstruction by dilation (0.5 s on the skull).
    allowed = sitk.ConnectedComponent(sitk.And(at_least(ct, low_hu), body))
    pieces = sitk.GetArrayViewFromImage(allowed)
    seeded = np.zeros(int(pieces.max()) + 1, dtype=bool)
    seed_voxels = sitk.GetArrayViewFromImage(seeds).astype(bool)
    seeded[np.unique(pieces[seed_voxels])] = True
    seeded[0] = False
    bone = lookup(seeded, pieces)
    del allowed, pieces, seeds, seed_voxels, body  # 250 MiB on the skull, before the fills
    # Fill the marrow: enclosed 3-D cavities, and per-slice rings up to the marrow limit
    # (the open ends of a cut shaft). No morphological closing at full resolution: it
    # costs ~4 s per 36 M voxels here and the two fills already catch the marrow.
    # Specks under ``min_bone_mm3`` are left for label_bones, which drops them anyway.
    fill_marrow(bone, preset.max_marrow_area_mm2 / float(np.prod(ct.GetSpacing()[:2])))
    image = sitk.GetImageFromArray(bone.view(np.uint8))
    image.CopyInformation(ct)
    return image


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


def _split_component(component: sitk.Image, preset: BonePreset, min_part_mm3: float) -> np.ndarray:
    """Split one connected bone mask into bones that meet at a joint.

    A split is proposed where an erosion of ``split_erosion_mm`` cuts the mask into big
    parts (watershed from those parts); it is kept only between parts whose contact is
    small next to the smaller part (contact < ``split_max_contact`` x volume^(2/3)): a joint
    bridged by partial volume, not a sheet of thin bone such as the skull's temporal squama.
    The decision is made on a grid of about 1 mm (a coarse voxel is bone if any of its
    voxels is), where the watershed costs a fraction of full resolution; a kept split is
    carried back to the full grid by nearest neighbour.

    Returns
    -------
    numpy.ndarray
        Labels 1..n on the component's grid (z, y, x); n == 1 when nothing splits.
    """
    mask = sitk.GetArrayFromImage(component).astype(bool)
    coarse = _coarse(component, _SPLIT_GRID_MM, any_voxel=True)
    # One distance map gives both the erosion (inside deeper than the radius) and the
    # landscape the watershed floods.
    distance = sitk.SignedMaurerDistanceMap(
        coarse, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
    )
    eroded = sitk.BinaryThreshold(
        distance, -1e9, -preset.split_erosion(max(component.GetSpacing()))
    )
    min_part = voxel_count(coarse, min_part_mm3)
    markers = sitk.RelabelComponent(sitk.ConnectedComponent(eroded), minimumObjectSize=min_part)
    n_parts = int(sitk.GetArrayViewFromImage(markers).max())
    if n_parts < 2:
        return mask.astype(np.uint16)
    flooded = sitk.MorphologicalWatershedFromMarkers(
        distance, sitk.Cast(markers, sitk.sitkUInt16), markWatershedLine=False, fullyConnected=False
    )
    coarse_mask = sitk.GetArrayFromImage(coarse).astype(bool)
    parts = sitk.GetArrayFromImage(flooded).astype(np.uint16) * coarse_mask
    voxel = float(np.prod(coarse.GetSpacing()))
    volumes = {k: float(np.count_nonzero(parts == k)) * voxel for k in range(1, n_parts + 1)}
    group = list(range(n_parts + 1))  # union-find over parts

    def root(k: int) -> int:
        while group[k] != k:
            k = group[k]
        return k

    for a in range(1, n_parts + 1):
        for b in range(a + 1, n_parts + 1):
            contact = _contact_mm2(parts, a, b, coarse.GetSpacing())
            if contact > preset.split_max_contact * min(volumes[a], volumes[b]) ** (2 / 3):
                group[root(b)] = root(a)
    roots = sorted({root(k) for k in range(1, n_parts + 1)})
    if len(roots) < 2:
        return mask.astype(np.uint16)
    relabel = np.zeros(n_parts + 1, dtype=np.uint16)
    for k in range(1, n_parts + 1):
        relabel[k] = roots.index(root(k)) + 1
    coarse_labels = sitk.GetImageFromArray(relabel[parts])
    coarse_labels.CopyInformation(coarse)
    fine = sitk.Resample(
        coarse_labels, component, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16
    )
    # Fine bone voxels that fell in an unlabelled coarse voxel take a neighbour's label.
    labels = sitk.GetArrayFromImage(fine).astype(np.uint16)
    grown = sitk.GetArrayFromImage(sitk.GrayscaleDilate(fine, [1, 1, 1])).astype(np.uint16)
    labels = np.where(labels == 0, grown, labels)
    labels[~mask] = 0
    return labels


def label_bones(bone: sitk.Image, preset: BonePreset) -> sitk.Image:
    """Label separate bones 1..n, largest first; touching bones split at narrow joints."""
    min_voxels = voxel_count(bone, preset.min_bone_mm3)
    # Sizes and boxes from the label array itself (scipy's find_objects): ITK's relabelling
    # and shape statistics cost 0.3 s and a second uint32 image (140 MiB) on the skull.
    components = sitk.ConnectedComponent(bone)
    array = sitk.GetArrayViewFromImage(components)
    sizes = label_sizes(array, int(array.max()))
    boxes = ndimage.find_objects(array)
    out = np.zeros(array.shape, dtype=np.uint16)
    pieces: list[tuple[int, tuple[slice, ...], np.ndarray]] = []
    for label in np.flatnonzero(sizes >= min_voxels):
        if label == 0:
            continue
        box = boxes[label - 1]
        assert box is not None  # it has voxels
        z0, y0, x0 = (int(b.start) for b in box)
        nz, ny, nx = (int(b.stop - b.start) for b in box)
        crop = sitk.RegionOfInterest(components, [nx, ny, nz], [x0, y0, z0]) == int(label)
        # A part must hold 5 % of its bone (and 10x the speck size) to count as a bone of
        # its own: small fragments shaved off by the erosion do not split anything.
        voxel_mm3 = float(np.prod(bone.GetSpacing()))
        min_part_mm3 = voxel_mm3 * max(10 * min_voxels, int(0.05 * sizes[label]))
        parts = _split_component(crop, preset, min_part_mm3)
        for part in range(1, int(parts.max()) + 1):
            pieces.append((int((parts == part).sum()), box, parts == part))
    pieces.sort(key=lambda p: -p[0])
    for new_label, (_, where, part_mask) in enumerate(pieces, start=1):
        out[where][part_mask] = new_label
    labels = sitk.GetImageFromArray(out)
    labels.CopyInformation(bone)
    logger.info("bone: %d separate bones", len(pieces))
    return labels
