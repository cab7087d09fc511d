"""Reading a model's meshes back out of its GLB: each structure's mesh at a level of detail.

The inverse of :func:`holo.export.glb.export_glb` for what leaves holo as geometry (STL
for a PACS, POLYDATA for 3D Slicer, a check in a test): scene k is LOD k, coarse to fine,
the last scene full detail; their nodes carry
``extras: {"structure": name, "lod": k}``, and their primitives' vertices are already in
patient LPS millimetres (only the scene's root node carries the glTF transform, so no
node transform is applied here). Primitives are decoded with DracoPy where they are
Draco-compressed (KHR_draco_mesh_compression), else read from their accessors.
"""

from __future__ import annotations

from holo.extras import need

need("convert", "DracoPy", feature="reading a model's meshes")

from typing import Any

import DracoPy
import numpy as np
import numpy.typing as npt

from holo.errors import PipelineError
from holo.export.container import read_glb
from holo.export.draco import read_accessor
from holo.export.normals import vertex_normals_of

__all__ = ["full_detail_meshes", "joined", "level_count", "level_meshes"]

Mesh = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
#: A mesh with its per-vertex unit normals, shape ``(N, 3)`` float32, patient LPS.
ShadedMesh = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.float32]]


def level_count(glb: bytes) -> int:
    """How many levels of detail (scenes) the model has; 0 for one without scenes."""
    return len(read_glb(glb).tree.get("scenes", []))


def full_detail_meshes(glb: bytes) -> dict[str, Mesh]:
    """Each structure's full-detail mesh, in the order of the model's last scene (the
    meshes of :func:`level_meshes` at the last level, without normals).

    Parameters
    ----------
    glb
        A model as :func:`holo.export.glb.export_glb` writes it.

    Returns
    -------
    dict
        Structure name -> ``(vertices, faces)``: vertices shape ``(N, 3)`` float32, patient
        LPS millimetres (as stored: after Draco's 14-bit quantisation); faces shape
        ``(M, 3)`` int64, indices into the vertices, counter-clockwise seen from outside.
        Empty for a model without structures (a radiograph panel).

    Raises
    ------
    PipelineError
        Not a GLB, or a structure node whose mesh is not triangles.
    """
    return {name: (v, f) for name, (v, f, _) in level_meshes(glb).items()}


def level_meshes(glb: bytes, level: int = -1) -> dict[str, ShadedMesh]:
    """Each structure's mesh at level of detail ``level`` (0 coarsest; -1 full detail),
    with its vertex normals.

    Returns
    -------
    dict
        Structure name -> ``(vertices, faces, normals)``: as :func:`full_detail_meshes`,
        plus normals shape ``(N, 3)`` float32 unit vectors, patient LPS: as stored
        (renormalised after Draco's quantisation), or computed from the faces (area
        weighted, :func:`~holo.export.normals.vertex_normals_of`) where a primitive has none.

    Raises
    ------
    PipelineError
        As :func:`full_detail_meshes`, or a ``level`` the model does not have.
    """
    parsed = read_glb(glb)
    tree = parsed.tree
    scenes = tree.get("scenes", [])
    if not scenes:
        return {}
    if not -len(scenes) <= level < len(scenes):
        raise PipelineError(
            f"the model has levels of detail 0 to {len(scenes) - 1}, not {level}; "
            "choose one of those (see `holo models`)"
        )
    nodes = tree.get("nodes", [])
    found: dict[str, ShadedMesh] = {}
    pending = list(scenes[level].get("nodes", []))
    while pending:  # the scene's node tree, depth first, in document order
        index = pending.pop(0)
        node = nodes[index]
        pending[:0] = node.get("children", [])
        structure = (node.get("extras") or {}).get("structure")
        if structure is None or "mesh" not in node:
            continue
        parts = [
            _primitive(tree, parsed.binary, p, structure)
            for p in tree["meshes"][node["mesh"]]["primitives"]
        ]
        found[str(structure)] = joined(parts)
    return found


def _primitive(
    tree: dict[str, Any], binary: bytes, primitive: dict[str, Any], name: str
) -> ShadedMesh:
    if primitive.get("mode", 4) != 4:
        raise PipelineError(
            f"structure {name}: primitive mode {primitive.get('mode')} is not triangles (4); "
            "re-export the model with holo convert"
        )
    draco = primitive.get("extensions", {}).get("KHR_draco_mesh_compression")
    if draco is not None:
        view = tree["bufferViews"][draco["bufferView"]]
        start = view.get("byteOffset", 0)
        decoded = DracoPy.decode(binary[start : start + view["byteLength"]])
        vertices = np.asarray(decoded.points, dtype=np.float32).reshape(-1, 3)
        faces = np.asarray(decoded.faces, dtype=np.int64).reshape(-1, 3)
        stored = decoded.normals
    else:
        vertices = np.asarray(
            read_accessor(tree, binary, primitive["attributes"]["POSITION"]), dtype=np.float32
        )
        faces = read_accessor(tree, binary, primitive["indices"]).reshape(-1, 3).astype(np.int64)
        normal = primitive["attributes"].get("NORMAL")
        stored = None if normal is None else read_accessor(tree, binary, normal)
    if stored is None or len(stored) != len(vertices):
        return vertices, faces, vertex_normals_of(vertices, faces).astype(np.float32)
    normals = np.asarray(stored, dtype=np.float64).reshape(-1, 3)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    unit = np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)
    return vertices, faces, unit.astype(np.float32)


def joined(parts: list[ShadedMesh]) -> ShadedMesh:
    """One mesh of ``parts`` (e.g. every structure of a level): vertices and normals
    stacked, each part's faces offset to its vertices."""
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0] + [len(v) for v, _, _ in parts[:-1]])
    vertices = np.concatenate([v for v, _, _ in parts])
    faces = np.concatenate([f + o for (_, f, _), o in zip(parts, offsets, strict=True)])
    normals = np.concatenate([n for _, _, n in parts])
    return vertices, faces, normals
