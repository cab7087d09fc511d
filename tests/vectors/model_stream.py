"""Shared test vectors for a model download: a real server's GetModel stream of the sample
knee, for the Unity bridge's reassembler (unity_bridge/Core/ModelAssembler.cs).

``python tests/vectors/model_stream.py`` converts ``sample_data/knee_ct`` (the project's own
synthetic study) with a fixed de-identification salt, so the GLB is the same every run,
publishes it on a real in-process server (:class:`holo.testing.TestServer`, port 0) whose
GetModel sends chunks of at most :data:`CHUNK_BYTES`, and records ``model_stream.json``:

* ``glb_base64``: the file (160 kB: Draco-compressed, every level fits; no need to cut it);
* ``manifest``: the wire manifest's fields the core reads (``model_id`` renamed ``m-knee``:
  the server's id is random);
* ``streams``: each GetModel call as the server answered it: how many manifests and the
  (offset, length) of each data message: from offset 0, resumed from a mid-download
  offset, and with ``have_sha256`` of a cached copy (the manifest only);
* ``python_levels``: when the Python SDK (:meth:`holo.client.HoloClient.fetch_model`,
  against the same server) reported each level: the bytes received at that moment;
* ``budgets``: for triangle budgets, the last level a device needs and where it may leave
  the stream (the page's rule, holo/web/src/model.js ``lastLevel``: the finest level within
  the budget, the coarse one always);
* ``corrupted``: one byte flipped at an offset (the generator's choice, in each level's own
  bytes), and which level's prefix check must fail first (the first whose prefix
  covers it), or, when the manifest lacks prefix checksums (older records), that only the
  whole file's check fails.

``tests/test_unity_vectors.py`` checks the file is current and consistent with the
manifest code; the C# tests feed it to the reassembler (ModelVectorTests.cs).
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc

from holo.client import HoloClient
from holo.pipeline import convert
from holo.testing import TestServer
from holo.v1 import asset_pb2, asset_pb2_grpc, common_pb2

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).with_name("model_stream.json")
KNEE = ROOT / "sample_data" / "knee_ct"
#: Small chunks so one level spans several messages (the server's default is 1 MiB).
CHUNK_BYTES = 16 << 10
SALT = "holo-shared-vectors"  # fixes the GLB's replacement UIDs: the same file every run
MODEL_ID = "m-knee"
CASE = "case-vectors"


def _stream(
    stub: asset_pb2_grpc.AssetServiceStub,
    metadata: tuple[tuple[str, str], ...],
    model_id: str,
    offset: int = 0,
    have: str = "",
) -> dict[str, Any]:
    """One GetModel call as the server answered it."""
    request = asset_pb2.GetModelRequest(
        model_id=common_pb2.ModelId(value=model_id), offset=offset, have_sha256=have
    )
    manifests = 0
    chunks: list[list[int]] = []
    for reply in stub.GetModel(request, metadata=metadata, timeout=30):
        if reply.HasField("manifest"):
            manifests += 1
        else:
            chunks.append([reply.data.offset, len(reply.data.data)])
    return {"offset": offset, "have_sha256": have, "manifests": manifests, "chunks": chunks}


def _plain_manifest(manifest: asset_pb2.ModelManifest) -> dict[str, Any]:
    return {
        "model_id": MODEL_ID,
        "size_bytes": manifest.size_bytes,
        "sha256": manifest.sha256,
        "lods": [
            {
                "index": lod.index,
                "name": lod.name,
                "triangles": lod.triangles,
                "bytes": lod.bytes,
                "complete_at_bytes": lod.complete_at_bytes,
                "prefix_sha256": lod.prefix_sha256,
            }
            for lod in manifest.lods
        ],
    }


def last_level(lods: list[dict[str, Any]], budget: int) -> int:
    """The last level a device drawing at most ``budget`` triangles needs (model.js)."""
    last = 0
    for k, lod in enumerate(lods):
        if lod["triangles"] <= budget:
            last = k
    return last


def _first_bad_level(glb: bytes, lods: list[dict[str, Any]], flip_at: int) -> int:
    """The first level whose prefix checksum fails once byte ``flip_at`` is flipped."""
    bad = bytearray(glb)
    bad[flip_at] ^= 0xFF
    for lod in lods:
        end = lod["complete_at_bytes"]
        if hashlib.sha256(bad[:end]).hexdigest() != lod["prefix_sha256"]:
            return int(lod["index"])
    raise AssertionError(f"flipping byte {flip_at} breaks no level")


def _corrupted(glb: bytes, lods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cases = []
    start = 0
    for lod in lods:
        end = lod["complete_at_bytes"]
        if end > start:  # a byte in the middle of what this level adds
            flip_at = (start + end) // 2
            cases.append(
                {
                    "flip_at": flip_at,
                    "prefix_checks": True,
                    "error_level": _first_bad_level(glb, lods, flip_at),
                }
            )
        start = end
    # An older record without prefix checksums: every level is reported unchecked and only
    # the whole file's checksum fails, at its last byte.
    cases.append({"flip_at": lods[0]["complete_at_bytes"] // 2, "prefix_checks": False})
    for case in cases:
        if case["prefix_checks"]:
            assert case["error_level"] == next(
                lod["index"] for lod in lods if case["flip_at"] < lod["complete_at_bytes"]
            )
    return cases


def vectors() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        glb_path = Path(tmp) / "knee.glb"
        convert(KNEE, glb_path, deid_salt=SALT)
        glb = glb_path.read_bytes()
        with TestServer(Path(tmp) / "data", model_chunk_bytes=CHUNK_BYTES) as server:
            model_id = server.publish_model(CASE, glb_path)
            token = server.token("observer", CASE)
            metadata = (("authorization", f"Bearer {token}"),)
            with grpc.insecure_channel(server.address) as channel:
                stub = asset_pb2_grpc.AssetServiceStub(channel)
                request = asset_pb2.GetModelRequest(model_id=common_pb2.ModelId(value=model_id))
                first = next(iter(stub.GetModel(request, metadata=metadata, timeout=30)))
                manifest = _plain_manifest(first.manifest)
                whole = _stream(stub, metadata, model_id)
                # A stream broken after the chunk that ends inside level 1: resumed there.
                ends = [offset + length for offset, length in whole["chunks"]]
                level1 = manifest["lods"][min(1, len(manifest["lods"]) - 1)]
                broken_after = next(
                    k for k, end in enumerate(ends) if end > level1["complete_at_bytes"] // 2
                )
                resumed = _stream(stub, metadata, model_id, offset=ends[broken_after])
                resumed["broken_after_chunks"] = broken_after + 1
                cached = _stream(stub, metadata, model_id, have=manifest["sha256"])
            reported: list[list[int]] = []
            received = [0]
            with HoloClient(server.address, token=token, insecure=True) as client:
                client.fetch_model(
                    model_id,
                    progress=lambda done, total: received.__setitem__(0, done),
                    on_lod=lambda k, prefix: reported.append([k, len(prefix)]),
                )
    assert hashlib.sha256(glb).hexdigest() == manifest["sha256"]
    lods = manifest["lods"]
    budgets = sorted(
        {0, 10_000, 30_000, 100_000, 1 << 62} | {int(lod["triangles"]) for lod in lods}
    )
    return {
        "about": (
            "holo GetModel stream of the sample knee from a real server, for the Unity "
            "bridge; regenerate with python tests/vectors/model_stream.py"
        ),
        "chunk_bytes": CHUNK_BYTES,
        "manifest": manifest,
        "glb_base64": base64.b64encode(glb).decode(),
        "streams": {"whole": whole, "resumed": resumed, "cached": cached},
        "python_levels": reported,
        "budgets": [
            {
                "budget": budget,
                "last_level": last_level(lods, budget),
                "stop_at_bytes": lods[last_level(lods, budget)]["complete_at_bytes"],
            }
            for budget in budgets
        ],
        "corrupted": _corrupted(glb, lods),
    }


def render() -> str:
    return json.dumps(vectors(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    sys.exit(0)
