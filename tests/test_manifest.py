"""Coarse-first GLB layout and the model manifest (``holo/export/manifest.py``).

The models are the sample knee (three bones, two LOD scenes) converted with and without
Draco, and the sample radiograph panel. The central check plays the client: it keeps only
the file prefix the manifest says completes LOD 0, zero-fills the rest, and shows that
scene 0 loads from it exactly as from the whole file, while one buffer view less does not.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import trimesh
from gltf import assert_valid_glb, ensure_validator, pack_glb, split_glb

from holo.errors import PipelineError
from holo.export.manifest import layout_coarse_first, model_manifest
from holo.pipeline import convert

#: Per mesh: world vertices (glTF metres), faces, vertex normals (as in the file).
Geometry = dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.float64]]]


@dataclass(frozen=True)
class Model:
    """A GLB as holo wrote it: path, bytes, JSON document, BIN chunk and manifest."""

    path: Path
    data: bytes
    document: dict[str, Any]
    binary: bytes
    manifest: dict[str, Any]

    @classmethod
    def read(cls, path: Path) -> Model:
        data = path.read_bytes()
        document, binary = split_glb(data)
        return cls(path, data, document, binary, model_manifest(data))


@pytest.fixture(scope="module", params=["draco", "none"])
def knee(
    request: pytest.FixtureRequest, sample_ct: Path, tmp_path_factory: pytest.TempPathFactory
) -> Model:
    out = tmp_path_factory.mktemp("knee") / f"knee_{request.param}.glb"
    convert(sample_ct, out, compression=request.param)
    return Model.read(out)


@pytest.fixture(scope="module")
def panel(sample_dx: Path, tmp_path_factory: pytest.TempPathFactory) -> Model:
    out = tmp_path_factory.mktemp("panel") / "knee_dx.glb"
    convert(sample_dx, out)
    return Model.read(out)


def _load_scene(data: bytes, index: int) -> trimesh.Scene:
    """Scene ``index`` of a GLB as trimesh loads it (trimesh loads the default ``scene``)."""
    document, binary = split_glb(data)
    document["scene"] = index
    loaded = trimesh.load(io.BytesIO(pack_glb(document, binary)), file_type="glb", process=False)
    assert isinstance(loaded, trimesh.Scene)
    return loaded


def _scene_geometry(data: bytes, index: int) -> Geometry:
    """Per mesh of scene ``index``: world vertices (glTF metres), faces and normals."""
    scene = _load_scene(data, index)
    geometry: Geometry = {}
    for node in scene.graph.nodes_geometry:
        matrix, name = scene.graph[node]
        mesh = scene.geometry[name]
        geometry[str(name)] = (
            trimesh.transform_points(mesh.vertices, matrix),
            np.asarray(mesh.faces),
            np.asarray(mesh.vertex_normals),
        )
    return geometry


def _same(a: Geometry, b: Geometry) -> bool:
    return a.keys() == b.keys() and all(
        all(np.array_equal(x, y) for x, y in zip(a[k], b[k], strict=True)) for k in a
    )


def _received(data: bytes, prefix: int) -> bytes:
    """What a client holds after ``prefix`` bytes of a stream, zero-filled to the full size."""
    return data[:prefix] + bytes(len(data) - prefix)


def _bin_start(data: bytes) -> int:
    """File offset of BIN byte 0: header (12), JSON chunk header (8) and data, BIN header (8)."""
    return 12 + 8 + int.from_bytes(data[12:16], "little") + 8


def _scene_views(document: dict[str, Any], index: int) -> set[int]:
    """Buffer views the meshes of a holo LOD scene read (root node -> structure nodes)."""
    nodes = document["nodes"]
    views: set[int] = set()
    for root in document["scenes"][index]["nodes"]:
        for child in [root, *nodes[root].get("children", [])]:
            if "mesh" not in nodes[child]:
                continue
            for primitive in document["meshes"][nodes[child]["mesh"]]["primitives"]:
                draco = primitive.get("extensions", {}).get("KHR_draco_mesh_compression")
                if draco is not None:
                    views.add(draco["bufferView"])
                for accessor in [primitive["indices"], *primitive["attributes"].values()]:
                    if "bufferView" in document["accessors"][accessor]:
                        views.add(document["accessors"][accessor]["bufferView"])
    return views


def _fine_first(data: bytes) -> bytes:
    """The same GLB with its buffer views in reverse order: the finest LOD's data first."""
    document, binary = split_glb(data)
    views = document["bufferViews"]
    pieces, size = [], 0
    for view in reversed(views):
        start = view.get("byteOffset", 0)
        pad = -size % 4
        pieces += [bytes(pad), binary[start : start + view["byteLength"]]]
        view["byteOffset"] = size + pad
        size += pad + view["byteLength"]
    document["buffers"][0]["byteLength"] = size
    return pack_glb(document, b"".join(pieces))


def test_lod_triangles_match_trimesh_and_the_holo_extras(knee: Model) -> None:
    lods = knee.manifest["lods"]
    table = knee.document["scenes"][0]["extras"]["holo"]["lods"]
    assert len(lods) == len(knee.document["scenes"]) == len(table) >= 2
    for k, lod in enumerate(lods):
        scene = _load_scene(knee.data, k)
        loaded = sum(
            len(scene.geometry[scene.graph[n][1]].faces) for n in scene.graph.nodes_geometry
        )
        assert lod["index"] == k
        assert lod["name"] == table[k]["name"] == f"lod{k}"
        assert lod["triangles"] == loaded == table[k]["total"]
    assert lods[0]["triangles"] < lods[-1]["triangles"]  # coarse first
    structures = {s["name"]: s["triangles"] for s in knee.manifest["structures"]}
    assert structures == {
        name: [level["triangles"][name] for level in table] for name in table[0]["triangles"]
    }


def test_manifest_facts(knee: Model) -> None:
    manifest = knee.manifest
    assert manifest["size_bytes"] == len(knee.data) == knee.path.stat().st_size
    assert manifest["sha256"] == hashlib.sha256(knee.data).hexdigest()
    assert manifest["media_type"] == "model/gltf-binary"
    holo = knee.document["scenes"][0]["extras"]["holo"]
    assert manifest["frame_of_reference_uid"] == holo["FrameOfReferenceUID"] != ""
    draco = knee.path.stem.endswith("draco")
    assert manifest["mesh_compressions"] == (["KHR_draco_mesh_compression"] if draco else [])
    # Every BIN view is first needed by exactly one LOD: the byte counts add up to the views.
    views = sum(v["byteLength"] for v in knee.document["bufferViews"])
    assert sum(lod["bytes"] for lod in manifest["lods"]) == views


def test_each_level_carries_the_checksum_of_its_prefix(knee: Model) -> None:
    for lod in knee.manifest["lods"]:
        prefix = knee.data[: lod["complete_at_bytes"]]
        assert lod["prefix_sha256"] == hashlib.sha256(prefix).hexdigest()
    assert knee.manifest["lods"][-1]["prefix_sha256"] == knee.manifest["sha256"]
    assert len({lod["prefix_sha256"] for lod in knee.manifest["lods"]}) == len(
        knee.manifest["lods"]
    )


def test_complete_at_bytes_increase_to_the_file_size(knee: Model) -> None:
    ends = [lod["complete_at_bytes"] for lod in knee.manifest["lods"]]
    assert ends == sorted(set(ends))  # strictly increasing: every LOD adds data
    assert ends[-1] == len(knee.data)
    # LOD 0 never waits for the bytes only the finest LOD needs: they are the file's tail.
    assert ends[0] <= len(knee.data) - knee.manifest["lods"][-1]["bytes"]


def test_views_are_ordered_by_first_lod(knee: Model) -> None:
    views = knee.document["bufferViews"]
    seen: set[int] = set()
    previous_end = 0
    for k in range(len(knee.document["scenes"])):
        added = _scene_views(knee.document, k) - seen
        seen |= added
        starts = [views[v]["byteOffset"] for v in added]
        assert min(starts) >= previous_end, f"LOD {k} data start before LOD {k - 1}'s end"
        previous_end = max(views[v]["byteOffset"] + views[v]["byteLength"] for v in added)
        assert all(s % 4 == 0 for s in starts)


def test_prefix_up_to_complete_at_shows_lod0(knee: Model) -> None:
    complete = knee.manifest["lods"][0]["complete_at_bytes"]
    full = _scene_geometry(knee.data, 0)
    assert len(full) == len(knee.manifest["structures"])
    assert _same(_scene_geometry(_received(knee.data, complete), 0), full)
    # One view less (the last one LOD 0 needs, cut where it starts) is not enough.
    views = knee.document["bufferViews"]
    last = max(_scene_views(knee.document, 0), key=lambda v: views[v]["byteOffset"])
    bin_start = _bin_start(knee.data)
    assert bin_start + views[last]["byteOffset"] + views[last]["byteLength"] == complete
    short = _received(knee.data, bin_start + views[last]["byteOffset"])
    assert not _same(_scene_geometry(short, 0), full)


def test_layout_is_idempotent_restores_coarse_first_and_stays_valid(
    knee: Model, tmp_path: Path
) -> None:
    assert layout_coarse_first(knee.data) == knee.data  # export_glb already laid it out
    scrambled = _fine_first(knee.data)
    before = model_manifest(scrambled)["lods"][0]["complete_at_bytes"]
    relaid = layout_coarse_first(scrambled)
    assert layout_coarse_first(relaid) == relaid
    after = model_manifest(relaid)["lods"][0]["complete_at_bytes"]
    assert after < before  # the fine-first file needed nearly all of itself for LOD 0
    assert after <= knee.manifest["lods"][0]["complete_at_bytes"] + 4 * len(
        knee.document["bufferViews"]
    )
    for k in range(len(knee.document["scenes"])):
        assert _same(_scene_geometry(relaid, k), _scene_geometry(knee.data, k))
    ensure_validator()
    paths = [tmp_path / "scrambled.glb", tmp_path / "relaid.glb"]
    paths[0].write_bytes(scrambled)
    paths[1].write_bytes(relaid)
    assert_valid_glb(knee.path, *paths)


def test_bounds_hold_the_finest_lod_tightly(knee: Model) -> None:
    bounds = knee.manifest["bounds_gltf_m"]
    low, high = np.asarray(bounds["min"]), np.asarray(bounds["max"])
    finest = len(knee.document["scenes"]) - 1
    points = np.concatenate([v for v, _f, _n in _scene_geometry(knee.data, finest).values()])
    assert np.all(points >= low - 1e-7) and np.all(points <= high + 1e-7)  # float32 rounding
    assert points.min(axis=0) == pytest.approx(low, abs=0.001)  # within 1 mm
    assert points.max(axis=0) == pytest.approx(high, abs=0.001)
    # The knee's long axis is patient S-I, which is glTF +Y: the tallest side of the box.
    assert np.argmax(high - low) == 1


def test_radiograph_panel_is_one_lod(panel: Model) -> None:
    manifest = panel.manifest
    assert manifest["lods"] == [
        {
            "index": 0,
            "name": "radiograph",
            "triangles": 2,
            "bytes": sum(v["byteLength"] for v in panel.document["bufferViews"]),
            "complete_at_bytes": len(panel.data),
            "prefix_sha256": hashlib.sha256(panel.data).hexdigest(),
        }
    ]
    assert manifest["structures"] == [{"name": "radiograph", "triangles": [2]}]
    assert manifest["mesh_compressions"] == []
    assert manifest["frame_of_reference_uid"] == ""
    width_m, height_m = np.subtract(
        manifest["bounds_gltf_m"]["max"], manifest["bounds_gltf_m"]["min"]
    )[:2]
    height_mm, width_mm = panel.document["scenes"][0]["extras"]["holo"]["size_mm"]
    assert (width_m, height_m) == pytest.approx((width_mm / 1000, height_mm / 1000), abs=1e-6)
    assert layout_coarse_first(panel.data) == panel.data


def test_glb_without_scenes_is_one_lod(panel: Model) -> None:
    document, binary = split_glb(panel.data)
    del document["scenes"], document["scene"]
    manifest = model_manifest(pack_glb(document, binary))
    assert [(lod["name"], lod["triangles"]) for lod in manifest["lods"]] == [("", 2)]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"PK\x03\x04 a zip, not a model" * 4,
        b"glTF\x02\x00\x00\x00\xff\x00\x00\x00" + bytes(20),
    ],
    ids=["empty", "zip", "truncated"],
)
def test_not_a_glb_is_a_pipeline_error(data: bytes) -> None:
    for function in (model_manifest, layout_coarse_first):
        with pytest.raises(PipelineError) as raised:
            function(data)
        assert "\n" not in str(raised.value) and "GLB" in str(raised.value)


def test_dangling_index_is_a_pipeline_error(panel: Model) -> None:
    document, binary = split_glb(panel.data)
    document["nodes"][0]["mesh"] = 7
    with pytest.raises(PipelineError, match="not valid glTF"):
        model_manifest(pack_glb(document, binary))
