"""Mesh cleanup and the level-of-detail chain.

LOD budgets follow headset limits (ARCHITECTURE.md "Wire protocol"): about 10k, 30k and
100k triangles per structure, then full detail. HoloLens 2 guidance keeps a whole scene
near 100k-200k triangles at 60 Hz, so the 10k LOD is what shows first.
"""

from __future__ import annotations

import logging

import fast_simplification
import numpy as np
import numpy.typing as npt
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["LOD_BUDGETS", "build_lods", "clean_mesh", "decimate"]

logger = logging.getLogger(__name__)

#: Triangle budgets of the coarse LODs, coarse to fine; full detail comes last.
LOD_BUDGETS = (10_000, 30_000, 100_000)


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
    _, first = np.unique(np.sort(faces, axis=1), axis=0, return_index=True)
    faces = faces[np.sort(first)]  # the same triangle twice: keep one
    body = _bodies(faces, len(vertices))
    v0, v1, v2 = (vertices[faces[:, k]] for k in range(3))
    volume = np.bincount(body, weights=np.einsum("ij,ij->i", v0, np.cross(v1, v2)) / 6.0)
    big = np.abs(volume) >= min_body_mm3
    if big.any():
        faces = faces[big[body]]
    out = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    out.remove_unreferenced_vertices()
    return out


def decimate(mesh: trimesh.Trimesh, target_faces: int) -> trimesh.Trimesh:
    """Quadric-error decimation to about ``target_faces`` triangles (Garland-Heckbert,
    through fast-simplification); already-small meshes are returned unchanged."""
    if len(mesh.faces) <= target_faces:
        return mesh
    vertices, faces = fast_simplification.simplify(
        mesh.vertices.astype(np.float32), mesh.faces.astype(np.int32), target_count=target_faces
    )
    # Quadric collapses keep each triangle's winding, so no repair is needed.
    return trimesh.Trimesh(vertices=vertices.astype(np.float64), faces=faces, process=False)


def build_lods(
    mesh: trimesh.Trimesh, budgets: tuple[int, ...] = LOD_BUDGETS
) -> list[trimesh.Trimesh]:
    """The LOD chain, coarse to fine: one mesh per budget below the full count, then full.

    Each LOD is decimated from the next finer one (faster than from full every time, and
    the chain stays nested in shape).
    """
    chain = [mesh]
    for budget in sorted(budgets, reverse=True):
        if budget < len(chain[0].faces):
            chain.insert(0, decimate(chain[0], budget))
    return chain
