"""Coarse-first delivery of a GLB: the byte layout and the manifest that describes it.

The server streams a model's GLB in file order, and a headset shows the coarsest level of
detail as soon as the bytes it needs have arrived (ARCHITECTURE.md, "Wire protocol"). GLB
puts the whole JSON chunk first, so what decides how early a scene can be shown is where
its buffer views lie in the BIN chunk:

* :func:`layout_coarse_first` orders the BIN chunk by the first scene (LOD) that uses each
  view: what scene 0 needs, then what scene 1 adds, ..., then views no scene uses
  (animations, say). Only ``byteOffset`` values and the buffer's length change in the JSON.
* :func:`model_manifest` reads the facts a client needs before it downloads anything: per
  LOD its triangles, the bytes it adds and the file prefix that completes it, per structure
  its triangles, the model's bounds in glTF metres and the mesh compression in use.

Scenes are the LODs, coarse to fine, as :func:`holo.export.glb.export_glb` writes them; a
GLB without a ``scenes`` list is one LOD made of its root nodes. Both functions only parse
JSON and offsets; nothing is decoded.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt

from holo.errors import PipelineError, quote_id
from holo.export.container import pack_glb, read_glb

__all__ = ["MEDIA_TYPE", "MESH_COMPRESSIONS", "layout_coarse_first", "model_manifest"]

#: IANA media type of binary glTF (RFC of the glTF 2.0 registration).
MEDIA_TYPE = "model/gltf-binary"
#: glTF extensions that change how mesh data are stored (a client must support them).
MESH_COMPRESSIONS = frozenset(
    {"KHR_draco_mesh_compression", "EXT_meshopt_compression", "KHR_mesh_quantization"}
)

_ALIGN = 4  # GLB: every buffer view offset a multiple of 4 (the largest component size)
_TRIANGLE_MODES = {4, 5, 6}  # TRIANGLES, TRIANGLE_STRIP, TRIANGLE_FAN


class _Glb:
    """A parsed GLB and what the layout and the manifest ask of it."""

    def __init__(self, glb: bytes) -> None:
        parsed = read_glb(glb)
        self.tree: dict[str, Any] = parsed.tree
        self.binary = parsed.binary
        self.json_end = parsed.json_end
        self.bin_start = parsed.bin_start
        self.has_bin = parsed.has_bin

    def regions(self, view: int) -> list[dict[str, Any]]:
        """The JSON objects that place view ``view``'s bytes in the BIN chunk.

        The view itself, and for EXT_meshopt_compression the extension's compressed range
        (the view then usually points at a fallback buffer with no bytes).
        """
        if not self.has_bin:
            return []
        spec = self.tree["bufferViews"][view]
        found = [spec] if spec.get("buffer", 0) == 0 else []
        meshopt = spec.get("extensions", {}).get("EXT_meshopt_compression")
        if isinstance(meshopt, dict) and meshopt.get("buffer", 0) == 0:
            found.append(meshopt)
        for region in found:
            offset, length = region.get("byteOffset", 0), region["byteLength"]
            if not (_is_size(offset) and _is_size(length)):
                # A negative or fractional offset would slice the wrong bytes (or fail in
                # the slice), not be refused by the bound below.
                raise PipelineError(
                    f"GLB bufferView {view} has byteOffset {quote_id(offset)} and byteLength "
                    f"{quote_id(length)}; both must be non-negative integers, re-export the file"
                )
            end = offset + length
            if end > len(self.binary):
                raise PipelineError(
                    f"GLB bufferView {view} ends at byte {end}, past its BIN chunk of "
                    f"{len(self.binary)} bytes; re-export the file"
                )
        return found

    def scenes(self) -> list[tuple[str, list[int]]]:
        """Each LOD as (name, root nodes); a file without scenes is one LOD of its roots."""
        scenes = self.tree.get("scenes")
        if scenes:
            return [(s.get("name", ""), list(s.get("nodes", []))) for s in scenes]
        nodes = self.tree.get("nodes", [])
        children = {c for n in nodes for c in n.get("children", [])}
        return [("", [i for i in range(len(nodes)) if i not in children])]

    def walk(self, roots: list[int]) -> Iterator[tuple[int, npt.NDArray[np.float64]]]:
        """Every node under ``roots`` with its world matrix (4x4, acting on column vectors)."""
        nodes = self.tree.get("nodes", [])
        stack = [(r, np.eye(4)) for r in reversed(roots)]
        seen: set[int] = set()
        while stack:
            index, parent = stack.pop()
            if index in seen:  # a node graph must be a forest; guard against cycles anyway
                continue
            seen.add(index)
            world = parent @ _local_matrix(nodes[index])
            yield index, world
            stack.extend((c, world) for c in reversed(nodes[index].get("children", [])))

    def scene_views(self, roots: list[int]) -> set[int]:
        """Buffer views a renderer reads to draw the scene with these roots."""
        tree = self.tree
        accessors: set[int] = set()
        images: set[int] = set()
        views: set[int] = set()
        for index, _world in self.walk(roots):
            node = tree["nodes"][index]
            if "skin" in node:
                skin = tree["skins"][node["skin"]]
                if "inverseBindMatrices" in skin:
                    accessors.add(skin["inverseBindMatrices"])
            instancing = node.get("extensions", {}).get("EXT_mesh_gpu_instancing", {})
            accessors.update(instancing.get("attributes", {}).values())
            if "mesh" not in node:
                continue
            for primitive in tree["meshes"][node["mesh"]]["primitives"]:
                accessors.update(primitive.get("attributes", {}).values())
                if "indices" in primitive:
                    accessors.add(primitive["indices"])
                for target in primitive.get("targets", []):
                    accessors.update(target.values())
                draco = primitive.get("extensions", {}).get("KHR_draco_mesh_compression")
                if draco is not None:
                    views.add(draco["bufferView"])
                if "material" in primitive:
                    for texture in _texture_indices(tree["materials"][primitive["material"]]):
                        images.update(_texture_sources(tree["textures"][texture]))
        for index in accessors:
            accessor = tree["accessors"][index]
            if "bufferView" in accessor:
                views.add(accessor["bufferView"])
            sparse = accessor.get("sparse")
            if sparse is not None:
                views.update((sparse["indices"]["bufferView"], sparse["values"]["bufferView"]))
        for index in images:
            image = tree["images"][index]
            if "bufferView" in image:
                views.add(image["bufferView"])
        return views

    def first_use(self) -> list[int]:
        """For each buffer view, the first scene that uses it (``len(scenes)`` for none)."""
        scenes = self.scenes()
        first = [len(scenes)] * len(self.tree.get("bufferViews", []))
        for k, (_name, roots) in reversed(list(enumerate(scenes))):
            for view in self.scene_views(roots):
                first[view] = k
        return first


def _is_size(value: Any) -> bool:
    """A byte offset or length: an integer >= 0 (JSON ``true`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@contextmanager
def _malformed() -> Iterator[None]:
    """Turn a dangling index, a missing required property, a property of the wrong JSON
    type (a number where an object belongs), a number out of range (a ``count`` of 1e999,
    a rotation of 10**400) or JSON nested too deep to walk into a :class:`PipelineError`."""
    try:
        yield
    except (
        KeyError,
        IndexError,
        TypeError,
        ValueError,
        AttributeError,
        OverflowError,
        RecursionError,
    ) as err:
        raise PipelineError(
            f"GLB JSON is not valid glTF 2.0 ({type(err).__name__}: {err}); "
            "check it with the Khronos glTF validator"
        ) from err


def _local_matrix(node: dict[str, Any]) -> npt.NDArray[np.float64]:
    """A node's local transform: its column-major ``matrix``, or T * R * S."""
    if "matrix" in node:
        return np.asarray(node["matrix"], dtype=np.float64).reshape(4, 4).T
    x, y, z, w = node.get("rotation", [0.0, 0.0, 0.0, 1.0])
    rotation = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    matrix = np.eye(4)
    matrix[:3, :3] = rotation * np.asarray(node.get("scale", [1.0, 1.0, 1.0]))
    matrix[:3, 3] = node.get("translation", [0.0, 0.0, 0.0])
    return matrix


def _texture_indices(value: Any) -> Iterator[int]:
    """Texture indices a material refers to: every ``*Texture`` object, extensions included."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key.endswith("Texture") and isinstance(item, dict) and "index" in item:
                yield item["index"]
            yield from _texture_indices(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texture_indices(item)


def _texture_sources(texture: dict[str, Any]) -> set[int]:
    """Images of a texture: ``source`` and the sources of KHR_texture_basisu, EXT_texture_webp..."""
    sources = {texture["source"]} if "source" in texture else set()
    for extension in texture.get("extensions", {}).values():
        if isinstance(extension, dict) and "source" in extension:
            sources.add(extension["source"])
    return sources


def _triangles(tree: dict[str, Any], primitive: dict[str, Any]) -> int:
    """Triangles a primitive draws (after Draco the accessor counts are the decoded ones)."""
    mode = primitive.get("mode", 4)
    if mode not in _TRIANGLE_MODES:
        return 0
    if "indices" in primitive:
        count = int(tree["accessors"][primitive["indices"]]["count"])
    elif "POSITION" in primitive.get("attributes", {}):
        count = int(tree["accessors"][primitive["attributes"]["POSITION"]]["count"])
    else:
        return 0
    return count // 3 if mode == 4 else max(count - 2, 0)


def layout_coarse_first(glb: bytes) -> bytes:
    """Reorder the BIN chunk so a prefix of the file holds the coarsest LODs whole.

    Buffer views are ordered by the first scene that uses them (images, Draco data,
    accessors' views); within one scene they keep their order in the file, and views no
    scene uses come last. Every view starts on a 4-byte boundary; ``byteStride``, ``target``
    and the view indices stay as they are, so the JSON differs only in ``byteOffset`` values
    and the buffer's ``byteLength``. Bytes no view covers are dropped, as are chunks other
    than JSON and BIN. Applying it twice gives the same bytes as applying it once.

    Parameters
    ----------
    glb
        A GLB 2.0 file, its scenes the LODs coarse to fine.

    Returns
    -------
    bytes
        The same model, relaid; a file without a BIN chunk comes back unchanged.

    Raises
    ------
    PipelineError
        If ``glb`` is not a GLB or a buffer view lies outside its BIN chunk.
    """
    parsed = _Glb(glb)
    if not parsed.has_bin:
        return glb
    with _malformed():
        first = parsed.first_use()
        placed = [  # (first scene, old start, view, region)
            (scene, region.get("byteOffset", 0), view, region)
            for view, scene in enumerate(first)
            for region in parsed.regions(view)
        ]
    placed.sort(key=lambda p: (p[0], p[1], p[2]))
    pieces: list[bytes] = []
    size = 0
    moved: dict[tuple[int, int], int] = {}  # (old start, length) -> new start: shared bytes once
    for _scene, start, _view, region in placed:
        length = region["byteLength"]
        if (start, length) not in moved:
            pad = -size % _ALIGN
            pieces.append(b"\0" * pad)
            moved[(start, length)] = size + pad
            pieces.append(parsed.binary[start : start + length])
            size += pad + length
        region["byteOffset"] = moved[(start, length)]
    parsed.tree["buffers"][0]["byteLength"] = size
    return pack_glb(parsed.tree, b"".join(pieces))


def model_manifest(glb: bytes) -> dict[str, Any]:
    """What a client needs to know about a model before and while it downloads it.

    Parameters
    ----------
    glb
        A GLB 2.0 file as holo writes it (scenes are LODs, coarse to fine, each relaid by
        :func:`layout_coarse_first`); any GLB is accepted.

    Returns
    -------
    dict
        ``size_bytes``, ``sha256`` (hex of the whole file), ``media_type``;
        ``lods``: per scene ``index``, ``name``, ``triangles``, ``bytes`` (BIN bytes of the
        views this LOD is the first to use) and ``complete_at_bytes`` (length of the file
        prefix holding the header, the JSON chunk and every view the LOD uses, so that
        prefix alone can show it; non-decreasing, the last is the file size) and
        ``prefix_sha256`` (hex SHA-256 of that prefix: what a client shows is checked);
        ``structures``: per structure (node ``extras.structure``, else the node's name)
        ``name`` and ``triangles`` per LOD (0 where absent);
        ``bounds_gltf_m``: ``{"min": [x, y, z], "max": [x, y, z]}`` of the finest LOD in the
        glTF model frame (metres, +Y up), from the POSITION accessors' bounds through each
        node's world matrix, or ``None`` if it has no bounded geometry;
        ``frame_of_reference_uid``: the (0020,0052) FrameOfReferenceUID recorded in the
        scene ``extras`` (``""`` if none); ``mesh_compressions``: the mesh compression
        extensions used, sorted.

    Raises
    ------
    PipelineError
        If ``glb`` is not a GLB.
    """
    parsed = _Glb(glb)
    with _malformed():
        return _manifest(glb, parsed)


def _manifest(glb: bytes, parsed: _Glb) -> dict[str, Any]:
    tree = parsed.tree
    scenes = parsed.scenes()
    first = parsed.first_use()
    lods: list[dict[str, Any]] = []
    structures: dict[str, list[int]] = {}
    complete = parsed.json_end
    for k, (name, roots) in enumerate(scenes):
        triangles = 0
        for index, _world in parsed.walk(roots):
            node = tree["nodes"][index]
            if "mesh" not in node:
                continue
            count = sum(_triangles(tree, p) for p in tree["meshes"][node["mesh"]]["primitives"])
            extras = node.get("extras")
            label = extras.get("structure") if isinstance(extras, dict) else None
            label = str(label or node.get("name") or f"mesh{node['mesh']}")
            structures.setdefault(label, [0] * len(scenes))[k] += count
            triangles += count
        own = [r for v in parsed.scene_views(roots) for r in parsed.regions(v)]
        if own:
            end = max(r.get("byteOffset", 0) + r["byteLength"] for r in own)
            complete = max(complete, parsed.bin_start + end)
        added = {
            (r.get("byteOffset", 0), r["byteLength"])
            for v, scene in enumerate(first)
            if scene == k
            for r in parsed.regions(v)
        }
        lods.append(
            {
                "index": k,
                "name": name,
                "triangles": triangles,
                "bytes": sum(length for _start, length in added),
                "complete_at_bytes": min(complete, len(glb)),
            }
        )
    lods[-1]["complete_at_bytes"] = len(glb)  # the last LOD is shown once the file is whole
    # One pass over the file: each level's digest is a copy of the running one at its end.
    digest = hashlib.sha256()
    done = 0
    for lod in lods:
        digest.update(glb[done : lod["complete_at_bytes"]])
        done = lod["complete_at_bytes"]
        lod["prefix_sha256"] = digest.copy().hexdigest()
    return {
        "size_bytes": len(glb),
        "sha256": hashlib.sha256(glb).hexdigest(),
        "media_type": MEDIA_TYPE,
        "lods": lods,
        "structures": [{"name": n, "triangles": t} for n, t in structures.items()],
        "bounds_gltf_m": _bounds(parsed, scenes[-1][1]),
        "frame_of_reference_uid": _frame_of_reference_uid(tree),
        "mesh_compressions": sorted(MESH_COMPRESSIONS & set(tree.get("extensionsUsed", []))),
    }


def _bounds(parsed: _Glb, roots: list[int]) -> dict[str, list[float]] | None:
    """Axis-aligned bounds (glTF metres) of the scene under ``roots``, or ``None``."""
    tree = parsed.tree
    corners: list[npt.NDArray[np.float64]] = []
    for index, world in parsed.walk(roots):
        node = tree["nodes"][index]
        if "mesh" not in node:
            continue
        for primitive in tree["meshes"][node["mesh"]]["primitives"]:
            position = primitive.get("attributes", {}).get("POSITION")
            if position is None:
                continue
            accessor = tree["accessors"][position]
            if "min" not in accessor or "max" not in accessor:
                continue  # required by the spec; tolerated when reading
            low, high = accessor["min"], accessor["max"]
            box = np.array(
                [[*corner, 1.0] for corner in itertools.product(*zip(low, high, strict=True))]
            )
            corners.append((box @ world.T)[:, :3])
    if not corners:
        return None
    points = np.concatenate(corners)
    return {"min": points.min(axis=0).tolist(), "max": points.max(axis=0).tolist()}


def _frame_of_reference_uid(tree: dict[str, Any]) -> str:
    """The FrameOfReferenceUID holo records in the scene ``extras`` (``""`` if none)."""
    for scene in tree.get("scenes", []):
        extras = scene.get("extras")
        holo = extras.get("holo") if isinstance(extras, dict) else None
        if isinstance(holo, dict) and holo.get("FrameOfReferenceUID"):
            return str(holo["FrameOfReferenceUID"])
    return ""
