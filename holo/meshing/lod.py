"""The level-of-detail chain: quadric decimation to triangle budgets.

LOD budgets follow headset limits (ARCHITECTURE.md "Wire protocol"): about 10k, 30k and
100k triangles per structure, then full detail. HoloLens 2 guidance keeps a whole scene
near 100k-200k triangles at 60 Hz, so the 10k LOD is what shows first.
"""

from __future__ import annotations

import fast_simplification
import numpy as np
import trimesh

__all__ = ["LOD_BUDGETS", "build_lods", "decimate"]

#: Triangle budgets of the coarse LODs, coarse to fine; full detail comes last.
LOD_BUDGETS = (10_000, 30_000, 100_000)


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
