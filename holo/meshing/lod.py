"""Mesh cleanup and the level-of-detail chain.

LOD budgets follow headset limits (ARCHITECTURE.md "Wire protocol"): about 10k, 30k and
100k triangles per structure, then full detail. HoloLens 2 guidance keeps a whole scene
near 100k-200k triangles at 60 Hz, so the 10k LOD is what shows first.
"""

from __future__ import annotations

import logging

import fast_simplification
import numpy as np
import trimesh

__all__ = ["LOD_BUDGETS", "build_lods", "clean_mesh", "decimate"]

logger = logging.getLogger(__name__)

#: Triangle budgets of the coarse LODs, coarse to fine; full detail comes last.
LOD_BUDGETS = (10_000, 30_000, 100_000)


def clean_mesh(mesh: trimesh.Trimesh, *, min_body_mm3: float = 100.0) -> trimesh.Trimesh:
    """Merge duplicate vertices, drop degenerate and duplicate faces and specks.

    Bodies (connected pieces) smaller than ``min_body_mm3`` (the segmentation's speck
    size) are removed: an isosurface of noisy CT leaves a few voxel-sized islands beside a
    bone. Winding is made consistent and normals point outward.
    """
    mesh = mesh.copy()
    mesh.merge_vertices()
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.update_faces(mesh.unique_faces())
    mesh.remove_unreferenced_vertices()
    bodies = mesh.split(only_watertight=False)
    if len(bodies) > 1:
        kept = [
            b
            for b in bodies
            if abs(b.volume) >= min_body_mm3 or (not b.is_watertight and len(b.faces) > 1000)
        ]
        if kept:
            joined = trimesh.util.concatenate(kept)
            assert isinstance(joined, trimesh.Trimesh)
            mesh = joined
    mesh.fix_normals()
    return mesh


def decimate(mesh: trimesh.Trimesh, target_faces: int) -> trimesh.Trimesh:
    """Quadric-error decimation to about ``target_faces`` triangles (Garland-Heckbert,
    through fast-simplification); already-small meshes are returned unchanged."""
    if len(mesh.faces) <= target_faces:
        return mesh
    vertices, faces = fast_simplification.simplify(
        mesh.vertices.astype(np.float32), mesh.faces.astype(np.int32), target_count=target_faces
    )
    out = trimesh.Trimesh(vertices=vertices.astype(np.float64), faces=faces, process=True)
    out.fix_normals()
    return out


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
