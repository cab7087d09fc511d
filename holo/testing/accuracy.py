"""How close a bone mesh is to an analytic capsule: Dice and surface distances, in mm.

The truth is a capsule (all points within ``radius`` of a segment), as the sample
generator's knee bones are, so every distance to it is exact. Used by
tests/test_thick_slices.py (floors) and benchmarks/accuracy.py (the figures).

- **Dice** on a fine grid (0.25 mm, well under the 0.8 mm pixels of the phantom): the mesh
  voxelised with VTK's ``vtkPolyDataToImageStencil``, against the capsule's inside test.
- **Surface distance**, both ways: from points spread evenly over the mesh's area to the
  capsule (exact), and from points spread evenly over the capsule to the mesh (VTK's
  ``vtkImplicitPolyDataDistance``, exact to the triangles). Mean and 95th percentile of the
  pooled distances, and the maximum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import trimesh
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkCommonDataModel import vtkImageData, vtkPolyData
from vtkmodules.vtkFiltersCore import vtkImplicitPolyDataDistance
from vtkmodules.vtkImagingStencil import vtkImageStencilToImage, vtkPolyDataToImageStencil

from holo.meshing.surface import to_polydata
from holo.volume import Volume

__all__ = ["BoneScores", "Capsule", "Scores", "score_bones", "score_mesh"]

_GRID_MM = 0.25
_SAMPLES = 20_000  # per direction: the 95th percentile to about +-0.01 mm


@dataclass(frozen=True)
class Capsule:
    """All points within ``radius`` mm of the segment ``start``-``end`` (LPS mm)."""

    start: tuple[float, float, float]
    end: tuple[float, float, float]
    radius: float

    def distance(self, points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Signed distance (mm) of ``points`` (n x 3) to the surface; negative inside."""
        a = np.asarray(self.start, dtype=np.float64)
        d = np.asarray(self.end, dtype=np.float64) - a
        rel = points - a
        s = np.clip((rel @ d) / float(d @ d), 0.0, 1.0)
        return np.asarray(np.linalg.norm(rel - s[:, None] * d, axis=1) - self.radius)

    def surface_points(self, n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
        """``n`` points spread evenly (by area) over the capsule's surface."""
        a = np.asarray(self.start, dtype=np.float64)
        d = np.asarray(self.end, dtype=np.float64) - a
        length = float(np.linalg.norm(d))
        axis = d / length
        helper = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        u = np.cross(axis, helper)
        u /= np.linalg.norm(u)
        v = np.cross(axis, u)
        # Area of the cylinder against the two hemispheres (one whole sphere).
        cylinder = 2 * np.pi * self.radius * length
        sphere = 4 * np.pi * self.radius**2
        on_cylinder = rng.random(n) < cylinder / (cylinder + sphere)
        out = np.empty((n, 3))
        k = int(on_cylinder.sum())
        angle = rng.uniform(0, 2 * np.pi, k)
        along = rng.uniform(0, length, k)
        out[on_cylinder] = (
            a
            + along[:, None] * axis
            + self.radius * (np.cos(angle)[:, None] * u + np.sin(angle)[:, None] * v)
        )
        direction = rng.normal(size=(n - k, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        # A point on the sphere belongs to the cap on its side of the segment.
        centre = np.where((direction @ axis)[:, None] >= 0, a + d, a)
        out[~on_cylinder] = centre + self.radius * direction
        return out


@dataclass(frozen=True)
class Scores:
    """Accuracy of one mesh against its capsule."""

    dice: float
    mean_mm: float
    p95_mm: float
    max_mm: float


def _voxelised(
    poly: vtkPolyData, lo: npt.NDArray[np.float64], shape: tuple[int, int, int]
) -> npt.NDArray[np.bool_]:
    """Inside mask of a closed mesh on the grid ``lo + index * _GRID_MM``, (z, y, x)."""
    nz, ny, nx = shape
    image = vtkImageData()
    image.SetOrigin(*lo)
    image.SetSpacing(_GRID_MM, _GRID_MM, _GRID_MM)
    image.SetExtent(0, nx - 1, 0, ny - 1, 0, nz - 1)
    stencil = vtkPolyDataToImageStencil()
    stencil.SetInputData(poly)
    stencil.SetOutputOrigin(*lo)
    stencil.SetOutputSpacing(_GRID_MM, _GRID_MM, _GRID_MM)
    stencil.SetOutputWholeExtent(0, nx - 1, 0, ny - 1, 0, nz - 1)
    to_image = vtkImageStencilToImage()
    to_image.SetInputConnection(stencil.GetOutputPort())
    to_image.SetInsideValue(1)
    to_image.SetOutsideValue(0)
    to_image.SetOutputScalarTypeToUnsignedChar()
    to_image.Update()
    array = vtk_to_numpy(to_image.GetOutput().GetPointData().GetScalars())
    return array.reshape(shape).astype(bool)


def score_mesh(mesh: trimesh.Trimesh, truth: Capsule, *, seed: int = 0) -> Scores:
    """Dice and symmetric surface distances (mm) of a closed mesh against a capsule."""
    rng = np.random.default_rng(seed)
    poly = to_polydata(mesh)
    # Dice on a fine grid over both shapes' bounds.
    ends = np.array([truth.start, truth.end])
    lo = np.minimum(mesh.bounds[0], ends.min(axis=0) - truth.radius) - 1.0
    hi = np.maximum(mesh.bounds[1], ends.max(axis=0) + truth.radius) + 1.0
    nx, ny, nz = (np.ceil((hi - lo) / _GRID_MM).astype(int) + 1).tolist()
    inside_mesh = _voxelised(poly, lo, (nz, ny, nx))
    grid = np.stack(
        np.meshgrid(
            lo[2] + _GRID_MM * np.arange(nz),
            lo[1] + _GRID_MM * np.arange(ny),
            lo[0] + _GRID_MM * np.arange(nx),
            indexing="ij",
        )[::-1],
        axis=-1,
    ).reshape(-1, 3)
    inside_truth = (truth.distance(grid) <= 0).reshape(nz, ny, nx)
    both = int(np.count_nonzero(inside_mesh & inside_truth))
    total = int(np.count_nonzero(inside_mesh)) + int(np.count_nonzero(inside_truth))
    dice = 2 * both / max(1, total)
    # Surface distances both ways.
    on_mesh, _ = trimesh.sample.sample_surface_even(mesh, _SAMPLES, seed=seed)
    if len(on_mesh) < _SAMPLES // 2:  # sample_surface_even can reject many: top up
        on_mesh = trimesh.sample.sample_surface(mesh, _SAMPLES, seed=seed)[0]
    to_truth = np.abs(truth.distance(np.asarray(on_mesh)))
    distance = vtkImplicitPolyDataDistance()
    distance.SetInput(poly)
    on_truth = truth.surface_points(_SAMPLES, rng)
    to_mesh = np.abs([distance.EvaluateFunction(*p) for p in on_truth])
    pooled = np.concatenate([to_truth, to_mesh])
    return Scores(
        dice=float(dice),
        mean_mm=float(pooled.mean()),
        p95_mm=float(np.percentile(pooled, 95)),
        max_mm=float(pooled.max()),
    )


@dataclass(frozen=True)
class BoneScores:
    """One truth bone's scores in a conversion; ``scores`` is None when no label matched."""

    name: str
    scores: Scores | None


def score_bones(volume: Volume, truths: dict[str, Capsule]) -> list[BoneScores]:
    """Segment ``volume`` with the bone preset, mesh each bone as ``holo convert`` does
    (:func:`holo.pipeline.structure_mesh`), and score every truth bone against the label
    whose mesh centroid lies nearest its segment's midpoint (within its radius; otherwise
    the bone was missed)."""
    from holo.pipeline import structure_mesh
    from segmentation import segment

    labels = segment(volume, "bone")
    meshes = [structure_mesh(volume, labels, label) for label in labels.names]
    out = []
    for name, truth in truths.items():
        middle = (np.asarray(truth.start) + np.asarray(truth.end)) / 2
        found = [(float(np.linalg.norm(m.center_mass - middle)), m) for m in meshes]
        near = [(d, m) for d, m in found if d <= truth.radius]
        best = min(near, key=lambda item: item[0])[1] if near else None
        out.append(BoneScores(name, None if best is None else score_mesh(best, truth)))
    return out
