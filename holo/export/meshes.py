"""Reading a model's meshes back out of its GLB: the full-detail mesh of each structure.

The inverse of :func:`holo.export.glb.export_glb` for what leaves holo as geometry (STL
for a PACS, a check in a test): the last scene is full detail, its nodes carry
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

__all__ = ["full_detail_meshes"]

Mesh = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]


def full_detail_meshes(glb: bytes) -> dict[str, Mesh]:
    """Each structure's full-detail mesh, in the order of the model's last scene.

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
    parsed = read_glb(glb)
    tree = parsed.tree
    scenes = tree.get("scenes", [])
    if not scenes:
        return {}
    nodes = tree.get("nodes", [])
    found: dict[str, Mesh] = {}
    pending = list(scenes[-1].get("nodes", []))
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
        found[str(structure)] = _join(parts)
    return found


def _primitive(tree: dict[str, Any], binary: bytes, primitive: dict[str, Any], name: str) -> Mesh:
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
        return vertices, faces
    vertices = read_accessor(tree, binary, primitive["attributes"]["POSITION"])
    faces = read_accessor(tree, binary, primitive["indices"]).reshape(-1, 3)
    return np.asarray(vertices, dtype=np.float32), faces.astype(np.int64)


def _join(parts: list[Mesh]) -> Mesh:
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0] + [len(v) for v, _ in parts[:-1]])
    vertices = np.concatenate([v for v, _ in parts])
    faces = np.concatenate([f + o for (_, f), o in zip(parts, offsets, strict=True)])
    return vertices, faces
