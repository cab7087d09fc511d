"""Vertex normals as holo's GLBs carry them: the faces' normals weighted by area.

0.2 s for a 1.5M-triangle skull where trimesh's angle-weighted normals take 1.3 s; on the
smoothed skull surface the two differ by a median 0.13 degrees (99th percentile 3 degrees,
at slivers), which shading on a headset does not show.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import trimesh

__all__ = ["vertex_normals", "vertex_normals_of"]


def vertex_normals(mesh: trimesh.Trimesh) -> npt.NDArray[np.float64]:
    """Unit normal per vertex (zero for a vertex of no area), as an n x 3 array."""
    return vertex_normals_of(mesh.vertices, mesh.faces)


def vertex_normals_of(vertices: npt.ArrayLike, faces: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """:func:`vertex_normals` of arrays: ``vertices`` (n, 3), ``faces`` (m, 3) indices;
    no trimesh needed (a model read back from its GLB without normals)."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces)
    v0, v1, v2 = (vertices[faces[:, k]] for k in range(3))
    weighted = np.cross(v1 - v0, v2 - v0)  # its length is twice the triangle's area
    normals = np.zeros_like(vertices)
    for k in range(3):
        normals += np.stack(
            [
                np.bincount(faces[:, k], weights=weighted[:, a], minlength=len(vertices))
                for a in range(3)
            ],
            axis=1,
        )
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)
