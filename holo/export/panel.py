"""A radiograph as a flat image panel at its physical size (GLB).

The panel lives directly in the glTF model frame (right-handed, +Y up, metres): width
along +X, height along +Y, facing +Z, centred on the origin, shown as on a light box
(row 0 of the image at the top, column 0 on the left). A projection X-ray has no place in
the patient frame, so the session's anchor pose places the panel in the room.
"""

from __future__ import annotations

from holo.extras import need

need("convert", "trimesh", feature="X-ray panels")

from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from PIL import Image
from trimesh.exchange.gltf import export_glb as trimesh_export_glb
from trimesh.visual.material import PBRMaterial

from holo.atomic import atomic_path
from holo.export.manifest import layout_coarse_first
from holo.imaging.radiograph import Radiograph

__all__ = ["MAX_TEXTURE_PIXELS", "export_panel_glb", "radiograph_panel"]

#: Longest texture side: 2048 keeps a panel within every headset GPU's texture limit and
#: under ~4 MB as PNG; the panel's physical size does not depend on it.
MAX_TEXTURE_PIXELS = 2048


def radiograph_panel(image: Radiograph) -> trimesh.Trimesh:
    """Two triangles of the radiograph's physical size, textured with its display image.

    Returns
    -------
    trimesh.Trimesh
        Vertices in glTF metres (see the module note), UVs, a PBR material whose base
        colour texture is the 8-bit display image (bone bright), downscaled to at most
        :data:`MAX_TEXTURE_PIXELS` on the long side.
    """
    height_mm, width_mm = image.size_mm
    w, h = width_mm / 2000.0, height_mm / 2000.0  # half sizes in metres
    vertices = np.array([[-w, -h, 0.0], [w, -h, 0.0], [w, h, 0.0], [-w, h, 0.0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])  # counter-clockwise seen from +Z
    # glTF UV origin is the top-left of the image: v = 0 at the top row.
    uv = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    texture = Image.fromarray(image.to_uint8(), mode="L")
    scale = MAX_TEXTURE_PIXELS / max(texture.size)
    if scale < 1:
        size = (max(1, round(texture.width * scale)), max(1, round(texture.height * scale)))
        texture = texture.resize(size, Image.Resampling.LANCZOS)
    # trimesh converts UVs to glTF's convention itself, from OpenGL-style (v up).
    material = PBRMaterial(
        name="radiograph",
        baseColorTexture=texture.convert("RGB"),
        metallicFactor=0.0,
        roughnessFactor=1.0,
        doubleSided=True,
    )
    visual = trimesh.visual.TextureVisuals(uv=np.c_[uv[:, 0], 1.0 - uv[:, 1]], material=material)
    return trimesh.Trimesh(vertices=vertices, faces=faces, visual=visual, process=False)


def export_panel_glb(
    image: Radiograph, path: str | Path, *, study: dict[str, Any]
) -> dict[str, Any]:
    """Write the radiograph panel as a GLB (unlit, so the greys show as they are).

    ``study`` must already be de-identified; it goes into the scene ``extras``.
    """
    scene = trimesh.Scene()
    scene.add_geometry(radiograph_panel(image), geom_name="radiograph", node_name="radiograph")
    extras = {
        "holo": {
            "kind": "radiograph_panel",
            "size_mm": [round(v, 3) for v in image.size_mm],
            "pixel_spacing_mm": list(image.pixel_spacing),
            "spacing_source": image.spacing_source,
            "pixels": list(image.pixels.shape),
            "study": study,
        }
    }

    def unlit(tree: dict[str, Any]) -> None:
        for material in tree.get("materials", []):
            material.setdefault("extensions", {})["KHR_materials_unlit"] = {}
        used = set(tree.get("extensionsUsed", []))
        tree["extensionsUsed"] = sorted(used | {"KHR_materials_unlit"})
        tree["scenes"][0]["extras"] = extras
        tree["scenes"][0]["name"] = "radiograph"

    data = trimesh_export_glb(scene, include_normals=False, tree_postprocessor=unlit)
    data = layout_coarse_first(data)  # one LOD, but every GLB holo writes is laid out alike
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return {"bytes": len(data), **extras["holo"]}
