"""The holo.v1 servicers: a thin layer from messages to the store and the job runner.

Authentication and error mapping are the interceptors' (:mod:`holo.server.interceptors`);
here each call reads its caller from :func:`current_claims`, checks the case, converts
messages and runs blocking store work off the event loop (``asyncio.to_thread``).
"""

# ruff: noqa: N802  (servicer method names are the RPC names the generated bases require)

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

from grpc import aio

from holo.errors import (
    ChecksumError,
    InvalidRequestError,
    PermissionDeniedError,
    RangeError,
    StudyError,
)
from holo.imaging import index_study
from holo.imaging.deid import public_metadata
from holo.server.auth import Claims
from holo.server.interceptors import current_claims
from holo.server.jobs import JobRunner, link_files
from holo.store import JobRecord, ModelRecord, Store, StudyRecord, UploadRecord
from holo.v1 import asset_pb2, asset_pb2_grpc, common_pb2

__all__ = ["AssetServicer", "ConversionServicer", "UploadServicer"]

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20  # ARCHITECTURE.md: large payloads move in chunks of at most 1 MiB
_JOB_STATES = {
    "queued": asset_pb2.JOB_STATE_QUEUED,
    "running": asset_pb2.JOB_STATE_RUNNING,
    "succeeded": asset_pb2.JOB_STATE_SUCCEEDED,
    "failed": asset_pb2.JOB_STATE_FAILED,
    "cancelled": asset_pb2.JOB_STATE_CANCELLED,
}


def _case(claims: Claims, requested: str = "") -> str:
    """The case a request is about: the token's; naming another is PERMISSION_DENIED."""
    if requested and requested != claims.case_id:
        raise PermissionDeniedError(
            f"the token is for case {claims.case_id!r}, not {requested!r}; mint a token for "
            "that case"
        )
    return claims.case_id


def _own(claims: Claims, kind: str, ident: str, case_id: str) -> None:
    if case_id != claims.case_id:
        raise PermissionDeniedError(
            f"{kind} {ident!r} belongs to another case; the token is for {claims.case_id!r}"
        )


def _upload_status(record: UploadRecord) -> asset_pb2.UploadStatus:
    return asset_pb2.UploadStatus(
        upload_id=asset_pb2.UploadId(value=record.upload_id),
        offset=record.offset,
        size_bytes=record.size_bytes,
        sha256=record.sha256,
        complete=record.complete,
        max_chunk_bytes=Store.MAX_CHUNK_BYTES,
    )


def summarise_study(files: Sequence[tuple[str, Path]], salt: str) -> dict[str, Any]:
    """Header facts of an uploaded study, with identity kept apart for radiologists only."""
    with tempfile.TemporaryDirectory(prefix="holo-study-") as folder:
        links = link_files(files, Path(folder))
        try:
            index = index_study(links)
        except StudyError as err:  # name the upload, not the server's scratch folder
            raise StudyError(
                err.message.replace(folder + "/", "").replace(folder, "the upload")
            ) from err
        series = [s.summary() for s in index.series]
        first = index.series[0].first
        identity = {
            "PatientName": str(first.get("PatientName", "") or ""),
            "PatientID": str(first.get("PatientID", "") or ""),
            "StudyDescription": str(first.get("StudyDescription", "") or ""),
        }
    public = [
        {
            **{k: s[k] for k in ("Modality", "kind", "images")},
            **public_metadata(
                {
                    "StudyInstanceUID": s["StudyInstanceUID"],
                    "SeriesInstanceUID": s["SeriesInstanceUID"],
                },
                salt=salt,
            ),
        }
        for s in series
    ]
    return {"series": series, "public_series": public, "identity": identity}


def _study_message(record: StudyRecord, claims: Claims) -> asset_pb2.Study:
    radiologist = claims.role == "radiologist"
    summary = record.summary
    series = summary["series"] if radiologist else summary["public_series"]
    message = asset_pb2.Study(
        study_id=asset_pb2.StudyId(value=record.study_id),
        case_id=record.case_id,
        study_instance_uid=series[0]["StudyInstanceUID"] if series else "",
        size_bytes=record.size_bytes,
        created_unix_ns=record.created_unix_ns,
        series=[
            asset_pb2.SeriesSummary(
                series_instance_uid=s["SeriesInstanceUID"],
                modality=s["Modality"],
                kind=s["kind"],
                images=int(s["images"]),
                series_description=s.get("SeriesDescription", "") if radiologist else "",
            )
            for s in series
        ],
    )
    if radiologist:
        identity = summary["identity"]
        message.patient_name = identity["PatientName"]
        message.patient_id = identity["PatientID"]
        message.study_description = identity["StudyDescription"]
    return message


def _job_message(job: JobRecord) -> asset_pb2.Job:
    return asset_pb2.Job(
        job_id=asset_pb2.JobId(value=job.job_id),
        study_id=asset_pb2.StudyId(value=job.study_id),
        case_id=job.case_id,
        preset=job.preset,
        state=_JOB_STATES[job.state],
        stage=job.stage,
        fraction=job.fraction,
        message=job.message,
        model_id=common_pb2.ModelId(value=job.model_id),
        created_unix_ns=job.created_unix_ns,
        finished_unix_ns=job.finished_unix_ns,
    )


def model_manifest_message(record: ModelRecord) -> asset_pb2.ModelManifest:
    """The wire manifest of a stored model (its JSON manifest as the store keeps it)."""
    m = record.manifest
    bounds = m["bounds_gltf_m"]
    return asset_pb2.ModelManifest(
        model_id=common_pb2.ModelId(value=record.model_id),
        study_id=asset_pb2.StudyId(value=record.study_id),
        case_id=record.case_id,
        sha256=record.sha256,
        size_bytes=record.size_bytes,
        media_type=m["media_type"],
        preset=record.preset,
        structures=[
            asset_pb2.StructureInfo(name=s["name"], triangles=s["triangles"])
            for s in m["structures"]
        ],
        lods=[
            asset_pb2.LevelOfDetail(
                index=lod["index"],
                name=lod["name"],
                triangles=lod["triangles"],
                bytes=lod["bytes"],
                complete_at_bytes=lod["complete_at_bytes"],
            )
            for lod in m["lods"]
        ],
        bounds=None
        if bounds is None
        else asset_pb2.BoundingBox(
            min=common_pb2.Vec3(x=bounds["min"][0], y=bounds["min"][1], z=bounds["min"][2]),
            max=common_pb2.Vec3(x=bounds["max"][0], y=bounds["max"][1], z=bounds["max"][2]),
        ),
        frame_of_reference_uid=m.get("frame_of_reference_uid") or "",
        mesh_compressions=m.get("mesh_compressions", []),
        created_unix_ns=record.created_unix_ns,
    )


class UploadServicer(asset_pb2_grpc.UploadServiceServicer):
    def __init__(self, store: Store, salt: str) -> None:
        self._store = store
        self._salt = salt

    async def StartUpload(
        self, request: asset_pb2.StartUploadRequest, context: aio.ServicerContext
    ) -> asset_pb2.UploadStatus:
        claims = current_claims()
        record = await asyncio.to_thread(
            self._store.start_upload,
            case_id=_case(claims, request.case_id),
            name=request.name,
            size_bytes=request.size_bytes,
            sha256=request.sha256,
            subject=claims.subject,
        )
        return _upload_status(record)

    async def _own_upload(self, upload_id: str) -> UploadRecord:
        record = await asyncio.to_thread(self._store.get_upload, upload_id)
        _own(current_claims(), "upload", upload_id, record.case_id)
        return record

    async def UploadChunk(
        self, request: asset_pb2.UploadChunkRequest, context: aio.ServicerContext
    ) -> asset_pb2.UploadStatus:
        await self._own_upload(request.upload_id.value)
        record = await asyncio.to_thread(
            self._store.append_chunk, request.upload_id.value, request.offset, request.data
        )
        return _upload_status(record)

    async def GetUpload(
        self, request: asset_pb2.GetUploadRequest, context: aio.ServicerContext
    ) -> asset_pb2.UploadStatus:
        return _upload_status(await self._own_upload(request.upload_id.value))

    async def CreateStudy(
        self, request: asset_pb2.CreateStudyRequest, context: aio.ServicerContext
    ) -> asset_pb2.Study:
        claims = current_claims()
        case_id = _case(claims, request.case_id)
        ids = [u.value for u in request.uploads]
        if not ids:
            raise InvalidRequestError("CreateStudy names no uploads; list the completed uploads")
        uploads = [await self._own_upload(i) for i in ids]
        files = [(u.name, self._store.blob_path(u.sha256)) for u in uploads if u.complete]
        if len(files) != len(uploads):
            pending = next(u for u in uploads if not u.complete)
            raise InvalidRequestError(
                f"upload {pending.upload_id} is not complete ({pending.offset} of "
                f"{pending.size_bytes} bytes); finish it before CreateStudy"
            )
        summary = await asyncio.to_thread(summarise_study, files, self._salt)
        record = await asyncio.to_thread(
            self._store.create_study, case_id=case_id, upload_ids=ids, summary=summary
        )
        logger.info("study %s created by %s in case %s", record.study_id, claims.subject, case_id)
        return _study_message(record, claims)

    async def ListStudies(
        self, request: asset_pb2.ListStudiesRequest, context: aio.ServicerContext
    ) -> asset_pb2.ListStudiesResponse:
        claims = current_claims()
        records = await asyncio.to_thread(self._store.list_studies, _case(claims, request.case_id))
        return asset_pb2.ListStudiesResponse(studies=[_study_message(r, claims) for r in records])


class ConversionServicer(asset_pb2_grpc.ConversionServiceServicer):
    def __init__(self, store: Store, jobs: JobRunner) -> None:
        self._store = store
        self._jobs = jobs

    async def _own_job(self, job_id: str) -> JobRecord:
        job = await self._jobs.get(job_id)
        _own(current_claims(), "job", job_id, job.case_id)
        return job

    async def StartConversion(
        self, request: asset_pb2.StartConversionRequest, context: aio.ServicerContext
    ) -> asset_pb2.Job:
        claims = current_claims()
        study = await asyncio.to_thread(self._store.get_study, request.study_id.value)
        _own(claims, "study", study.study_id, study.case_id)
        job = await self._jobs.start(
            study_id=study.study_id,
            case_id=study.case_id,
            preset=request.preset,
            series_uid=request.series_instance_uid,
            subject=claims.subject,
        )
        return _job_message(job)

    async def WatchJob(
        self, request: asset_pb2.WatchJobRequest, context: aio.ServicerContext
    ) -> AsyncIterator[asset_pb2.Job]:
        await self._own_job(request.job_id.value)
        async for job in self._jobs.watch(request.job_id.value):
            yield _job_message(job)

    async def CancelJob(
        self, request: asset_pb2.CancelJobRequest, context: aio.ServicerContext
    ) -> asset_pb2.Job:
        await self._own_job(request.job_id.value)
        return _job_message(await self._jobs.cancel(request.job_id.value))

    async def ListJobs(
        self, request: asset_pb2.ListJobsRequest, context: aio.ServicerContext
    ) -> asset_pb2.ListJobsResponse:
        case_id = _case(current_claims(), request.case_id)
        jobs = await asyncio.to_thread(self._store.list_jobs, case_id)
        return asset_pb2.ListJobsResponse(jobs=[_job_message(j) for j in jobs])


def _read_verified(store: Store, sha256: str) -> bytes:
    path = store.blob_path(sha256)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:  # never serve a damaged blob
        logger.error("blob %s does not match its hash: damaged on disk", path)
        raise ChecksumError(
            f"the stored model {sha256[:12]}... is damaged on the server's disk; convert the "
            "study again (an administrator should check the disk)"
        )
    return data


class _BlobCache:
    """The bytes of recently served models, so concurrent fetches read the disk once.

    A model is read and verified in a worker thread once, however many fetches ask for it
    at the same time (they await the same task); cached models are served without waiting.
    """

    def __init__(self, store: Store, capacity_bytes: int = 512 << 20) -> None:
        self._store = store
        self._capacity = capacity_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0  # bytes in _items
        self._loading: dict[str, asyncio.Task[bytes]] = {}

    async def get(self, sha256: str) -> bytes:
        cached = self._items.get(sha256)
        if cached is not None:
            self._items.move_to_end(sha256)
            return cached
        task = self._loading.get(sha256)
        if task is None:
            task = asyncio.ensure_future(asyncio.to_thread(_read_verified, self._store, sha256))
            self._loading[sha256] = task
            task.add_done_callback(lambda _t: self._loading.pop(sha256, None))
        data = await asyncio.shield(task)
        if sha256 not in self._items:
            self._items[sha256] = data
            self._size += len(data)
            while self._size > self._capacity and len(self._items) > 1:
                self._size -= len(self._items.popitem(last=False)[1])
        return data


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
        self._cache = _BlobCache(store)
        self._models: dict[str, tuple[ModelRecord, asset_pb2.ModelManifest]] = {}

    async def _model(self, model_id: str) -> tuple[ModelRecord, asset_pb2.ModelManifest]:
        """A model's record and wire manifest; models never change once stored, so both are
        kept after the first look-up (a few kB each)."""
        known = self._models.get(model_id)
        if known is None:
            known = self._remember(await asyncio.to_thread(self._store.get_model, model_id))
        return known

    def _remember(self, record: ModelRecord) -> tuple[ModelRecord, asset_pb2.ModelManifest]:
        known = self._models.get(record.model_id)
        if known is None:
            known = self._models[record.model_id] = (record, model_manifest_message(record))
        return known

    async def ListModels(
        self, request: asset_pb2.ListModelsRequest, context: aio.ServicerContext
    ) -> asset_pb2.ListModelsResponse:
        case_id = _case(current_claims(), request.case_id)
        records = await asyncio.to_thread(self._store.list_models, case_id)
        return asset_pb2.ListModelsResponse(models=[self._remember(r)[1] for r in records])

    async def GetModel(
        self, request: asset_pb2.GetModelRequest, context: aio.ServicerContext
    ) -> AsyncIterator[asset_pb2.GetModelResponse]:
        record, manifest = await self._model(request.model_id.value)
        _own(current_claims(), "model", record.model_id, record.case_id)
        if request.offset > record.size_bytes:
            raise RangeError(
                f"offset {request.offset} is past the end of model {record.model_id} "
                f"({record.size_bytes} bytes); resume from an offset within it"
            )
        yield asset_pb2.GetModelResponse(manifest=manifest)
        if request.have_sha256 == record.sha256:
            return
        data = await self._cache.get(record.sha256)
        boundaries = [lod["complete_at_bytes"] for lod in record.manifest["lods"]]
        for begin, end in _chunks(request.offset, len(data), self._chunk, boundaries):
            yield asset_pb2.GetModelResponse(
                data=asset_pb2.ModelData(offset=begin, data=data[begin:end])
            )
