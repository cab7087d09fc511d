"""Vertex normals as holo's GLBs carry them: the faces' normals weighted by area.

0.2 s for a 1.5M-triangle skull where trimesh's angle-weighted normals take 1.3 s; on the
smoothed skull surface the two differ by a median 0.13 degrees (99th percentile 3 degrees,
at slivers), which shading on a headset does not show.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import trimesh

__all__ = ["vertex_normals"]


def vertex_normals(mesh: trimesh.Trimesh) -> npt.NDArray[np.float64]:
    """Unit normal per vertex (zero for a vertex of no area), as an n x 3 array."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces)
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
