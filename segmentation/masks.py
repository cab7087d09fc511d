"""Binary-mask building blocks on SimpleITK images (LPS, mm), sized in millimetres.

Every radius is given in mm and turned into voxels per axis, so anisotropic CT (e.g. 0.5 mm
in-plane, 3 mm slices) gets the same physical operation along every axis.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

__all__ = [
    "fill_holes_per_slice",
    "keep_largest",
    "radius_voxels",
    "remove_small",
    "voxel_count",
]


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


def fill_holes_per_slice(mask: sitk.Image, max_area_mm2: float | None = None) -> sitk.Image:
    """Fill 2-D holes in every axial slice (constant z index), optionally only small ones.

    Parameters
    ----------
    mask
        Binary uint8 image, 3-D.
    max_area_mm2
        Holes larger than this stay open (e.g. the brain inside a skull ring); None fills all.
    """
    array = sitk.GetArrayFromImage(mask).astype(bool)  # (z, y, x)
    sx, sy, _ = mask.GetSpacing()
    max_pixels = None if max_area_mm2 is None else max_area_mm2 / (sx * sy)
    out = array.copy()
    for k in range(array.shape[0]):
        plane = array[k]
        if not plane.any():
            continue
        plane_image = sitk.GetImageFromArray(plane.astype(np.uint8))
        holes = sitk.GetArrayFromImage(sitk.BinaryFillhole(plane_image)).astype(bool) & ~plane
        if not holes.any():
            continue
        if max_pixels is None:
            out[k] |= holes
            continue
        labels = sitk.GetArrayFromImage(
            sitk.ConnectedComponent(sitk.GetImageFromArray(holes.astype(np.uint8)))
        )
        sizes = np.bincount(labels.ravel())
        small = sizes <= max_pixels
        small[0] = False
        out[k] |= small[labels]
    result = sitk.GetImageFromArray(out.astype(np.uint8))
    result.CopyInformation(mask)
    return result
