"""Mesh cleanup: degenerate and duplicate faces out, specks out, winding kept.

Vectorised numpy and scipy rather than trimesh's graph repair, which costs ~9 s on a
1.5M-triangle skull.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["clean_mesh"]


def _bodies(faces: npt.NDArray[np.int64], n_vertices: int) -> npt.NDArray[np.int64]:
    """Connected piece of every face (pieces share vertices), via a sparse graph."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix(
        (np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])),
        shape=(n_vertices, n_vertices),
    )
    _, vertex_body = connected_components(graph, directed=False)
    return np.asarray(vertex_body[faces[:, 0]], dtype=np.int64)


def clean_mesh(mesh: trimesh.Trimesh, *, min_body_mm3: float = 100.0) -> trimesh.Trimesh:
    """Drop degenerate and duplicate faces and specks; keep the winding as it is.

    Pieces whose enclosed volume is under ``min_body_mm3`` (the segmentation's speck size)
    are removed: an isosurface of noisy CT leaves a few voxel-sized islands beside a bone.
    The input must already wind outward (as :func:`~holo.meshing.surface.extract_surface`
    guarantees); this is vectorised numpy and scipy, not trimesh's graph repair, because
    that costs ~9 s on a 1.5M-triangle skull.
    """
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    v0, v1, v2 = (vertices[faces[:, k]] for k in range(3))
    cross = np.cross(v1 - v0, v2 - v0)
    faces = faces[np.einsum("ij,ij->i", cross, cross) > 0]  # zero-area triangles out
    # The same triangle twice: keep one. One int64 key per triangle (sorted vertex ids in
    # 21 bits each, up to 2M vertices) sorts 3x faster than np.unique over rows.
    ordered = np.sort(faces, axis=1)
    if len(vertices) < 1 << 21:
        keys = (ordered[:, 0] << 42) | (ordered[:, 1] << 21) | ordered[:, 2]
        _, first = np.unique(keys, return_index=True)
    else:
        _, first = np.unique(ordered, axis=0, return_index=True)
    faces = faces[np.sort(first)]
    body = _bodies(faces, len(vertices))
    v0, v1, v2 = (vertices[faces[:, k]] for k in range(3))
    volume = np.bincount(body, weights=np.einsum("ij,ij->i", v0, np.cross(v1, v2)) / 6.0)
    big = np.abs(volume) >= min_body_mm3
    if big.any():
        faces = faces[big[body]]
    out = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    out.remove_unreferenced_vertices()
    return out
