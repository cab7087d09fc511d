"""GLB (glTF 2.0) export of a model: one scene per level of detail.

Layout of the file:

* ``scenes[k]`` is LOD k, coarse to fine (``scene`` = the finest, what a generic viewer
  shows); a client that wants to show something at once instantiates scene 0 and swaps
  to finer scenes as they arrive.
* each scene has one root node named ``lod<k>`` whose matrix is the patient -> glTF rule
  of ARCHITECTURE.md (LPS mm -> right-handed, +Y up, metres), under it one node per
  structure, named after it, with a PBR material of its colour;
* vertices stay in patient LPS millimetres inside the meshes, so the inverse of the root
  matrix (recorded in the scene ``extras``) maps any point back to the patient;
* ``extras`` of every scene: FrameOfReferenceUID, units, the inverse transform, the LOD
  table (triangles per structure) and the de-identified study facts.
"""

from __future__ import annotations

from holo.extras import need

need("convert", "trimesh", "DracoPy", feature="GLB export")

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import trimesh
from trimesh.exchange.gltf import export_glb as trimesh_export_glb
from trimesh.visual.material import PBRMaterial

from holo.atomic import atomic_path
from holo.coords import GLTF_FROM_LPS, LPS_FROM_GLTF
from holo.export.draco import EncodedMesh, draco_compress_glb
from holo.export.manifest import layout_coarse_first
from holo.export.normals import vertex_normals

__all__ = ["Compression", "Structure", "export_glb", "lod_levels"]

logger = logging.getLogger(__name__)

Compression = Literal["draco", "none"]


@dataclass
class Structure:
    """One anatomical structure: its name, colour and LOD chain (coarse to fine, LPS mm)."""

    name: str
    color: tuple[float, float, float, float]
    lods: list[trimesh.Trimesh]
    extras: dict[str, Any] = field(default_factory=dict)


def lod_levels(structures: Sequence[Structure]) -> list[list[trimesh.Trimesh]]:
    """Model-wide LOD levels: level k holds each structure's k-th mesh, the chains aligned
    at full detail (a shorter chain repeats its coarsest mesh in the coarse levels)."""
    n = max(len(s.lods) for s in structures)
    return [[s.lods[max(0, len(s.lods) - n + k)] for s in structures] for k in range(n)]


def export_glb(
    structures: Sequence[Structure],
    path: str | Path,
    *,
    frame_of_reference_uid: str | None,
    study: dict[str, Any],
    compression: Compression = "draco",
    draco_ready: Mapping[bytes, EncodedMesh] | None = None,
) -> dict[str, Any]:
    """Write the model as one GLB, atomically (no partial file on failure).

    Parameters
    ----------
    structures
        Meshes in patient LPS millimetres.
    study
        De-identified study facts (:func:`holo.imaging.deid.public_metadata`): they go into
        the file as they are, so never pass identifying metadata.
    compression
        ``"draco"`` (KHR_draco_mesh_compression; three.js and glTFast decode it) or
        ``"none"``.
    draco_ready
        Draco encodings made beforehand (:func:`holo.export.draco.precompress`).

    Returns
    -------
    dict
        ``{"bytes": n, "lods": [{"triangles": {...}, ...}], ...}`` for reports.
    """
    levels = lod_levels(structures)
    scene = trimesh.Scene()
    lod_table = []
    for k, level in enumerate(levels):
        root = f"lod{k}"
        scene.graph.update(frame_to=root, frame_from=scene.graph.base_frame, matrix=GLTF_FROM_LPS)
        triangles = {}
        for s, mesh in zip(structures, level, strict=True):
            # A new Trimesh over the same arrays (no copy: 54 MB for a 1.5M-triangle LOD);
            # only its visual is its own.
            geometry = trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, process=False)
            geometry.vertex_normals = vertex_normals(mesh)  # type: ignore[method-assign]  # trimesh property with a setter
            geometry.visual = trimesh.visual.TextureVisuals(
                material=PBRMaterial(
                    name=s.name,
                    baseColorFactor=list(s.color),
                    metallicFactor=0.0,
                    roughnessFactor=0.8,
                    doubleSided=False,
                )
            )
            scene.add_geometry(
                geometry,
                geom_name=f"{s.name}.lod{k}",
                node_name=f"{s.name}@lod{k}",
                parent_node_name=root,
            )
            triangles[s.name] = len(mesh.faces)
        lod_table.append({"name": root, "triangles": triangles, "total": sum(triangles.values())})
    extras = {
        "holo": {
            "FrameOfReferenceUID": frame_of_reference_uid,
            "vertex_units": "mm (patient LPS); the lod root node maps them to glTF metres",
            "lps_from_gltf": LPS_FROM_GLTF.T.ravel().tolist(),  # column-major like glTF
            "lods": lod_table,
            "study": study,
        }
    }

    def to_lod_scenes(tree: dict[str, Any]) -> None:
        nodes = tree["nodes"]
        roots = {n["name"]: i for i, n in enumerate(nodes) if n.get("name", "").startswith("lod")}
        for node in nodes:
            name = node.get("name", "")
            if "@lod" in name:
                structure, lod = name.split("@lod")
                node["name"] = structure
                node["extras"] = {"structure": structure, "lod": int(lod)}
        tree["scenes"] = [
            {"name": f"lod{k}", "nodes": [roots[f"lod{k}"]], "extras": {**extras, "lod": k}}
            for k in range(len(levels))
        ]
        tree["scene"] = len(levels) - 1

    data = trimesh_export_glb(scene, include_normals=True, tree_postprocessor=to_lod_scenes)
    if compression == "draco":
        data = draco_compress_glb(data, draco_ready)
    data = layout_coarse_first(data)  # a streamed prefix shows LOD 0 (ARCHITECTURE.md)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    logger.info("wrote %s: %d bytes, %d LOD scenes", path, len(data), len(levels))
    return {"bytes": len(data), "lods": lod_table, "compression": compression}


def lps_points_from_scene(scene: trimesh.Scene, node_name: str) -> np.ndarray:
    """Vertices of one loaded node, mapped back to LPS mm through the inverse rule."""
    mesh = scene.geometry[scene.graph[node_name][1]]
    world = trimesh.transform_points(mesh.vertices, scene.graph[node_name][0])
    return trimesh.transform_points(world, LPS_FROM_GLTF)
