"""Fuzz the GLB container parser and what reads a model's JSON: ``read_glb``,
``model_manifest`` (every published model goes through it) and ``layout_coarse_first``.

Documented errors: :class:`~holo.errors.PipelineError` from all three. Also checked: the
layout is idempotent, as its docstring promises.

An input is a whole file (first byte even) or, first byte odd, a JSON text and a BIN chunk
separated by the first 0xFF byte (never in UTF-8) that the harness packs with the right
lengths: mutating a whole file's JSON almost always breaks its chunk lengths, so without
the packed form the fuzzer hardly gets past the container into the manifest.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["holo"]):
    from holo.errors import PipelineError
    from holo.export.container import BIN_CHUNK, JSON_CHUNK, pack_glb, read_glb
    from holo.export.manifest import layout_coarse_first, model_manifest

from common import fuzz


def _container(data: bytes) -> bytes:
    if not data or not data[0] & 1:
        return data[1:]
    text, _, binary = data[1:].partition(b"\xff")
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<II", len(text), JSON_CHUNK) + text
    if binary:
        binary += b"\0" * (-len(binary) % 4)
        chunks += struct.pack("<II", len(binary), BIN_CHUNK) + binary
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks


def _packed(tree: dict, binary: bytes) -> bytes:
    """A seed in the packed form."""
    return b"\x01" + json.dumps(tree).encode() + b"\xff" + binary


def test_one_input(data: bytes) -> None:
    data = _container(data)
    try:
        read_glb(data)
        model_manifest(data)
        relaid = layout_coarse_first(data)
    except PipelineError:
        return
    again = layout_coarse_first(relaid)
    assert again == relaid, "layout_coarse_first is not idempotent"


def _model(lods: int, *, draco: bool = False, meshopt: bool = False) -> tuple[dict, bytes]:
    """A small model as holo writes it: one scene per LOD, a triangle per structure."""
    tree: dict = {
        "asset": {"version": "2.0", "generator": "holo fuzz seed"},
        "scenes": [],
        "nodes": [],
        "meshes": [],
        "accessors": [],
        "bufferViews": [],
        "buffers": [{"byteLength": 0}],
        "materials": [{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}],
        "textures": [{"source": 0, "extensions": {"EXT_texture_webp": {"source": 0}}}],
        "images": [{"bufferView": 0, "mimeType": "image/png"}],
    }
    binary = b"\x89PNG\0\0\0\0"
    tree["bufferViews"].append({"buffer": 0, "byteOffset": 0, "byteLength": 8})
    for k in range(lods):
        positions = struct.pack("<9f", 0, 0, 0, 1, 0, 0, 0, 1 + k, 0)
        indices = struct.pack("<3H", 0, 1, 2) + b"\0\0"
        for payload in (positions, indices):
            view: dict = {"buffer": 0, "byteOffset": len(binary), "byteLength": len(payload)}
            if meshopt:
                view["extensions"] = {
                    "EXT_meshopt_compression": {
                        "buffer": 0,
                        "byteOffset": len(binary),
                        "byteLength": len(payload),
                    }
                }
            tree["bufferViews"].append(view)
            binary += payload
        pos, idx = len(tree["accessors"]), len(tree["accessors"]) + 1
        tree["accessors"] += [
            {
                "bufferView": len(tree["bufferViews"]) - 2,
                "componentType": 5126,
                "count": 3,
                "type": "VEC3",
                "min": [0, 0, 0],
                "max": [1, 1 + k, 0],
            },
            {"bufferView": len(tree["bufferViews"]) - 1, "componentType": 5123, "count": 3},
        ]
        primitive: dict = {"attributes": {"POSITION": pos}, "indices": idx, "material": 0}
        if draco:
            primitive["extensions"] = {
                "KHR_draco_mesh_compression": {"bufferView": len(tree["bufferViews"]) - 1}
            }
        tree["meshes"].append({"primitives": [primitive]})
        tree["nodes"] += [
            {
                "children": [len(tree["nodes"]) + 1],
                "matrix": [1, 0, 0, 0, 0, 0, -1, 0, 0, 1, 0, 0, 0, 0, 0, 1],
            },
            {
                "mesh": k,
                "name": f"bone_lod{k}",
                "extras": {"structure": "bone"},
                "translation": [0.1, 0, 0],
                "rotation": [0, 0, 0.7071, 0.7071],
                "scale": [1, 2, 1],
            },
        ]
        tree["scenes"].append({"name": f"lod{k}", "nodes": [len(tree["nodes"]) - 2]})
    tree["scenes"][0]["extras"] = {"holo": {"FrameOfReferenceUID": "1.2.3.4"}}
    used = ["KHR_draco_mesh_compression"] if draco else []
    used += ["EXT_meshopt_compression"] if meshopt else []
    if used:
        tree["extensionsUsed"] = used
    tree["buffers"][0]["byteLength"] = len(binary)
    return tree, binary


def write_seeds(folder: Path) -> None:
    for name, (tree, binary) in {
        "one_lod": _model(1),
        "three_lods": _model(3),
        "draco": _model(2, draco=True),
        "meshopt": _model(2, meshopt=True),
    }.items():
        (folder / f"{name}.glb").write_bytes(b"\0" + pack_glb(tree, binary))
        (folder / f"{name}_relaid.glb").write_bytes(
            b"\0" + layout_coarse_first(pack_glb(tree, binary))
        )
        (folder / f"{name}.packed").write_bytes(_packed(tree, binary))
    # No scenes (one LOD of the root nodes), no BIN chunk, an unknown chunk after JSON.
    tree, binary = _model(1)
    del tree["scenes"]
    (folder / "no_scenes.packed").write_bytes(_packed(tree, binary))
    (folder / "json_only.glb").write_bytes(b"\0" + pack_glb({"asset": {"version": "2.0"}}, b""))
    text = json.dumps({"asset": {"version": "2.0"}}).encode().ljust(28)
    body = (
        struct.pack("<II", len(text), 0x4E4F534A) + text + struct.pack("<II", 4, 0x58595A) + b"abcd"
    )
    (folder / "extra_chunk.glb").write_bytes(
        b"\0" + struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body
    )


if __name__ == "__main__":
    fuzz(test_one_input, write_seeds)
