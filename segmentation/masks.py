"""Binary-mask building blocks on SimpleITK images (LPS, mm), sized in millimetres.

Every radius is given in mm and turned into voxels per axis, so anisotropic CT (e.g. 0.5 mm
in-plane, 3 mm slices) gets the same physical operation along every axis.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from scipy import ndimage

_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)  # 4-neighbours within one axial slice
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)

__all__ = [
    "at_least",
    "dilate_mm",
    "erode_mm",
    "fill_holes",
    "fill_holes_per_slice",
    "fill_marrow",
    "keep_largest",
    "label_sizes",
    "lookup",
    "opening_mm",
    "radius_voxels",
    "remove_small",
    "voxel_count",
]


_CHUNK_VOXELS = 1 << 22  # numpy turns label arrays into int64 to index or count: 32 MiB at a time


def label_sizes(labels: npt.NDArray[np.integer], n: int) -> npt.NDArray[np.int64]:
    """Voxels per label 0..n of a label array, counted a slab at a time.

    ``np.bincount`` of the whole array would first copy it to int64 (280 MiB for the
    skull's 512 x 512 x 140).
    """
    flat = labels.reshape(-1)
    sizes = np.zeros(n + 1, dtype=np.int64)
    for start in range(0, flat.size, _CHUNK_VOXELS):
        sizes += np.bincount(flat[start : start + _CHUNK_VOXELS], minlength=n + 1)[: n + 1]
    return sizes


def lookup(table: npt.NDArray[np.bool_], labels: npt.NDArray[np.integer]) -> npt.NDArray[np.bool_]:
    """``table[labels]``, a slab at a time (fancy indexing copies the index array to int64)."""
    out = np.empty(labels.shape, dtype=bool)
    flat_in, flat_out = labels.reshape(-1), out.reshape(-1)
    for start in range(0, flat_in.size, _CHUNK_VOXELS):
        flat_out[start : start + _CHUNK_VOXELS] = table[flat_in[start : start + _CHUNK_VOXELS]]
    return out


def at_least(image: sitk.Image, level: float) -> sitk.Image:
    """uint8 mask of the voxels at or above ``level``, on any pixel type (int16 CT too)."""
    dtype = sitk.GetArrayViewFromImage(image).dtype
    top = float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1e30
    if level > top:
        return sitk.Cast(image * 0, sitk.sitkUInt8)
    return sitk.BinaryThreshold(image, lowerThreshold=max(level, -top - 1), upperThreshold=top)


def radius_voxels(image: sitk.Image, radius_mm: float) -> list[int]:
    """A radius in mm as whole voxels along x, y, z (at least 1 where the radius is > 0)."""
    return [max(1, round(radius_mm / s)) if radius_mm > 0 else 0 for s in image.GetSpacing()]


def voxel_count(image: sitk.Image, volume_mm3: float) -> int:
    """How many voxels of ``image`` make ``volume_mm3``."""
    return max(1, round(volume_mm3 / float(np.prod(image.GetSpacing()))))


def keep_largest(mask: sitk.Image) -> sitk.Image:
    """The largest 6-connected component of a binary mask (empty stays empty)."""
    components = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    return sitk.Cast(components == 1, sitk.sitkUInt8)


def remove_small(mask: sitk.Image, min_voxels: int) -> sitk.Image:
    """Drop 6-connected components smaller than ``min_voxels``."""
    components = sitk.RelabelComponent(sitk.ConnectedComponent(mask), minimumObjectSize=min_voxels)
    return sitk.Cast(components > 0, sitk.sitkUInt8)


def dilate_mm(mask: sitk.Image, radius_mm: float) -> sitk.Image:
    """Dilation by a Euclidean ball of ``radius_mm``, through a distance map.

    One Maurer distance transform (linear time, multi-threaded in ITK) instead of a ball
    kernel: on the skull's 1 mm body grid (8.7 M voxels) an opening of 3 mm costs 1.7 s
    with ``BinaryMorphologicalOpening`` and about 0.2 s this way.
    """
    if radius_mm <= 0:
        return mask
    distance = sitk.SignedMaurerDistanceMap(
        mask, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
    )
    return sitk.BinaryThreshold(distance, -1e30, radius_mm)


def erode_mm(mask: sitk.Image, radius_mm: float) -> sitk.Image:
    """Erosion by a Euclidean ball: what stays out of the background's dilation."""
    if radius_mm <= 0:
        return mask
    return sitk.Cast(sitk.Not(dilate_mm(sitk.Not(mask), radius_mm)), sitk.sitkUInt8)


def opening_mm(mask: sitk.Image, radius_mm: float) -> sitk.Image:
    """Opening (erode, then dilate) by a ball of ``radius_mm``: cuts bridges thinner than
    twice the radius."""
    return dilate_mm(erode_mm(mask, radius_mm), radius_mm)


def _fill(
    array: npt.NDArray[np.bool_], structure: npt.NDArray[np.bool_], max_voxels: float | None
) -> bool:
    """Fill, in place, the background pieces (connected by ``structure``) of ``array`` that
    do not touch the border of the in-plane box, up to ``max_voxels`` each; True if any.

    Only the bounding box of the mask (x, y; and z for 3-D holes) is labelled, plus a
    one-voxel ring of background that stands for everything outside it (all of which
    touches the border): a bone mask covers a fraction of the field of view.
    """
    axes = range(3) if structure[0].any() else (1, 2)
    box: list[slice] = [slice(None)] * 3
    for axis in axes:
        where = np.flatnonzero(array.any(axis=tuple(a for a in range(3) if a != axis)))
        if where.size == 0:
            return False
        box[axis] = slice(max(int(where[0]) - 1, 0), int(where[-1]) + 2)
    inside = array[tuple(box)]  # a view: filled in place
    try:  # uint16 labels: half the memory of int32 (70 instead of 140 MiB on the skull)
        background = np.empty(inside.shape, dtype=np.uint16)
        n = ndimage.label(~inside, structure=structure, output=background)
    except RuntimeError:  # more than 65,535 pieces
        background, n = ndimage.label(~inside, structure=structure)
    hole = np.ones(n + 1, dtype=bool)
    hole[0] = False  # the mask itself
    for axis in axes:
        for end in (0, -1):
            hole[np.unique(np.take(background, end, axis=axis))] = False
    if max_voxels is not None:
        hole &= label_sizes(background, n) <= max_voxels
    if not hole.any():
        return False
    inside |= lookup(hole, background)
    return True


def _filled(
    mask: sitk.Image, structure: npt.NDArray[np.bool_], max_voxels: float | None
) -> sitk.Image:
    array = sitk.GetArrayFromImage(mask).astype(bool)  # (z, y, x)
    if not _fill(array, structure, max_voxels):
        return mask
    result = sitk.GetImageFromArray(array.view(np.uint8))
    result.CopyInformation(mask)
    return result


def fill_marrow(array: npt.NDArray[np.bool_], max_slice_voxels: float) -> None:
    """Fill, in place, a (z, y, x) bone mask's enclosed 3-D cavities, then its 2-D holes
    per axial slice up to ``max_slice_voxels`` each (:func:`fill_holes`, then
    :func:`fill_holes_per_slice`, without two image copies)."""
    _fill(array, ndimage.generate_binary_structure(3, 1), None)
    _fill(array, _IN_PLANE, max_slice_voxels)


def fill_holes(mask: sitk.Image) -> sitk.Image:
    """Fill enclosed 3-D cavities (background 6-connected pieces not touching the border).

    scipy's labelling of the mask's bounding box: ITK's ``BinaryFillhole`` costs 0.6 s on
    the skull's 512 x 512 x 140, this about a third of it.
    """
    return _filled(mask, ndimage.generate_binary_structure(3, 1), None)


def fill_holes_per_slice(mask: sitk.Image, max_area_mm2: float | None = None) -> sitk.Image:
    """Fill 2-D holes in every axial slice (constant z index), optionally only small ones.

    One in-plane connected-component labelling of the background over the whole volume
    (scipy, a structure connecting 4-neighbours within a slice only) instead of a 2-D
    ``BinaryFillhole`` per slice: 0.4 s instead of 1.9 s on the skull's 512 x 512 x 140.
    A background piece that does not touch its slice's border is a hole.

    Parameters
    ----------
    mask
        Binary uint8 image, 3-D.
    max_area_mm2
        Holes larger than this stay open (e.g. the brain inside a skull ring); None fills all.
    """
    sx, sy, _ = mask.GetSpacing()
    return _filled(mask, _IN_PLANE, None if max_area_mm2 is None else max_area_mm2 / (sx * sy))
