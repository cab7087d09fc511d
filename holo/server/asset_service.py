# ruff: noqa: N802  (servicer method names are the RPC names the generated bases require)
"""AssetService: a case's models, delivered coarse level of detail first.

``GetModel`` sends the manifest, then the GLB (laid out coarse first at publication) in
messages of at most 1 MiB that also end at every LOD boundary, so a level is complete with
the message that ends it; a client resumes from an offset and, holding the content hash
already, gets the manifest only.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from grpc import aio

from holo.errors import InvalidRequestError, RangeError
from holo.server.access import check_case, request_case
from holo.store import ModelRecord, Store
from holo.store.cache import BlobCache
from holo.v1 import asset_pb2, asset_pb2_grpc
from holo.wire.asset import model_manifest_message

__all__ = ["CHUNK_BYTES", "MAX_MANIFESTS", "AssetServicer"]

CHUNK_BYTES = 1 << 20  # ARCHITECTURE.md: large payloads move in chunks of at most 1 MiB
#: Models whose record and wire manifest are kept after a look-up, least recently used out
#: first: a few kB each, so a few MB, and far more models than a node's cases use in a day.
#: (Unbounded, a node that lists every model it holds would keep them all, for good.)
MAX_MANIFESTS = 1024


def _chunks(
    start: int, end: int, limit: int, boundaries: Sequence[int]
) -> Iterator[tuple[int, int]]:
    """Byte ranges of at most ``limit`` from ``start`` to ``end`` that also break at each
    LOD boundary, so a level is complete with the message that ends it (the coarsest is
    often a few tens of kB: it should not wait for the rest of a 1 MiB chunk)."""
    cuts = sorted({b for b in boundaries if start < b < end} | {end})
    position = start
    for cut in cuts:
        while position < cut:
            step = min(limit, cut - position)
            yield position, position + step
            position += step


class AssetServicer(asset_pb2_grpc.AssetServiceServicer):
    def __init__(self, store: Store, *, chunk_bytes: int = CHUNK_BYTES) -> None:
        if not 0 < chunk_bytes <= CHUNK_BYTES:
            raise InvalidRequestError(f"model chunks must be 1 byte to 1 MiB, not {chunk_bytes}")
        self._store = store
        self._chunk = chunk_bytes
        self._cache = BlobCache(store)
        self._models: OrderedDict[str, tuple[ModelRecord, asset_pb2.ModelManifest]] = OrderedDict()

    async def _model(self, model_id: str) -> tuple[ModelRecord, asset_pb2.ModelManifest]:
        """A model's record and wire manifest; models never change once stored, so both are
        kept after a look-up (the last :data:`MAX_MANIFESTS` models used)."""
        known = self._models.get(model_id)
        if known is None:
            return self._remember(await asyncio.to_thread(self._store.get_model, model_id))
        self._models.move_to_end(model_id)
        return known

    def _remember(self, record: ModelRecord) -> tuple[ModelRecord, asset_pb2.ModelManifest]:
        known = self._models.get(record.model_id)
        if known is None:
            known = self._models[record.model_id] = (record, model_manifest_message(record))
            while len(self._models) > MAX_MANIFESTS:
                self._models.popitem(last=False)
        else:
            self._models.move_to_end(record.model_id)
        return known

    async def ListModels(
        self, request: asset_pb2.ListModelsRequest, context: aio.ServicerContext
    ) -> asset_pb2.ListModelsResponse:
        records = await asyncio.to_thread(self._store.list_models, request_case(request.case_id))
        return asset_pb2.ListModelsResponse(models=[self._remember(r)[1] for r in records])

    async def GetModel(
        self, request: asset_pb2.GetModelRequest, context: aio.ServicerContext
    ) -> AsyncIterator[asset_pb2.GetModelResponse]:
        record, manifest = await self._model(request.model_id.value)
        check_case("model", record.model_id, record.case_id)
        if request.offset > record.size_bytes:
            raise RangeError(
                f"offset {request.offset} is past the end of model {record.model_id} "
                f"({record.size_bytes} bytes); resume from an offset within it"
            )
        yield asset_pb2.GetModelResponse(manifest=manifest)
        if request.have_sha256 == record.sha256:
            return
        data = await self._cache.get(record.sha256)
        lods = record.manifest["lods"]
        boundaries = [lod["complete_at_bytes"] for lod in lods]
        stop = _end_within(lods, request.max_triangles) or len(data)
        for begin, end in _chunks(request.offset, stop, self._chunk, boundaries):
            yield asset_pb2.GetModelResponse(
                data=asset_pb2.ModelData(offset=begin, data=data[begin:end])
            )


def _end_within(lods: list[dict[str, Any]], max_triangles: int) -> int:
    """Where a stream for a device with ``max_triangles`` ends: the end of the finest level
    within it (the coarse level always); 0 for the whole file (no budget, or a level
    without ``prefix_sha256``: a partial copy the client could not check)."""
    if not max_triangles or not lods:
        return 0
    last = max([0, *(k for k, lod in enumerate(lods) if lod["triangles"] <= max_triangles)])
    if not all(lod.get("prefix_sha256") for lod in lods[: last + 1]):
        return 0
    return int(lods[last]["complete_at_bytes"])
