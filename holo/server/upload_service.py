# ruff: noqa: N802  (servicer method names are the RPC names the generated bases require)
"""UploadService: resumable uploads of a study's files, then the study made of them.

Thin over :class:`holo.store.Store`; the study's header summary is
:func:`holo.imaging.summary.summarise_study` (read from the stored files under their upload
names, in the server's :class:`~holo.server.fairpool.FairPool`: heavy work never holds the
threads that every RPC's store calls use, and callers take turns).
"""

from __future__ import annotations

import asyncio
import functools
import logging

from grpc import aio

from holo.errors import InvalidRequestError
from holo.imaging.sources import NamedFile, ZipLimits
from holo.imaging.summary import summarise_study
from holo.server.access import check_case, request_case
from holo.server.fairpool import FairPool
from holo.server.interceptors import current_claims
from holo.store import Store, UploadRecord
from holo.v1 import asset_pb2, asset_pb2_grpc
from holo.wire.asset import study_message, upload_status_message

__all__ = ["UploadServicer", "expire_uploads"]

logger = logging.getLogger(__name__)

#: How often abandoned uploads are looked for at most: hourly (a quarter of a shorter
#: maximum age), so a partial file outlives its age by at most a quarter of it.
_EXPIRY_EVERY_S = 3600.0


async def expire_uploads(store: Store, max_age_s: float) -> None:
    """Expire unfinished uploads idle for ``max_age_s`` periodically, until cancelled
    (:meth:`holo.store.Store.expire_uploads`; the server also calls that once as it
    starts)."""
    every = max(0.05, min(_EXPIRY_EVERY_S, max_age_s / 4))
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(store.expire_uploads, max_age_s)
        except Exception:  # the next round tries again; the server serves on
            logger.exception("expiring abandoned uploads failed")


class UploadServicer(asset_pb2_grpc.UploadServiceServicer):
    def __init__(
        self, store: Store, salt: str, heavy: FairPool, zip_limits: ZipLimits | None = None
    ) -> None:
        self._store = store
        self._salt = salt
        self._heavy = heavy
        # Zips are read one member at a time, in the data folder's scratch space (never
        # the system's temporary folder), within the server's limits.
        self._summarise = functools.partial(
            summarise_study, limits=zip_limits or ZipLimits(), scratch=store.tmp_dir
        )

    def _status(self, record: UploadRecord) -> asset_pb2.UploadStatus:
        return upload_status_message(record, Store.MAX_CHUNK_BYTES)

    async def _own_upload(self, upload_id: str) -> UploadRecord:
        record = await asyncio.to_thread(self._store.get_upload, upload_id)
        check_case("upload", upload_id, record.case_id)
        return record

    async def StartUpload(
        self, request: asset_pb2.StartUploadRequest, context: aio.ServicerContext
    ) -> asset_pb2.UploadStatus:
        record = await asyncio.to_thread(
            self._store.start_upload,
            case_id=request_case(request.case_id),
            name=request.name,
            size_bytes=request.size_bytes,
            sha256=request.sha256,
            subject=current_claims().subject,
        )
        return self._status(record)

    async def UploadChunk(
        self, request: asset_pb2.UploadChunkRequest, context: aio.ServicerContext
    ) -> asset_pb2.UploadStatus:
        await self._own_upload(request.upload_id.value)
        record = await asyncio.to_thread(
            self._store.append_chunk, request.upload_id.value, request.offset, request.data
        )
        return self._status(record)

    async def GetUpload(
        self, request: asset_pb2.GetUploadRequest, context: aio.ServicerContext
    ) -> asset_pb2.UploadStatus:
        return self._status(await self._own_upload(request.upload_id.value))

    async def CreateStudy(
        self, request: asset_pb2.CreateStudyRequest, context: aio.ServicerContext
    ) -> asset_pb2.Study:
        case_id = request_case(request.case_id)
        ids = [u.value for u in request.uploads]
        if not ids:
            raise InvalidRequestError("CreateStudy names no uploads; list the completed uploads")
        uploads = [await self._own_upload(i) for i in ids]
        pending = next((u for u in uploads if not u.complete), None)
        if pending is not None:
            raise InvalidRequestError(
                f"upload {pending.upload_id} is not complete ({pending.offset} of "
                f"{pending.size_bytes} bytes); finish it before CreateStudy"
            )
        files = [NamedFile(self._store.blob_path(u.sha256), u.name) for u in uploads]
        claims = current_claims()
        summary = await self._heavy.run(claims.subject, self._summarise, files, self._salt)
        record = await asyncio.to_thread(
            self._store.create_study, case_id=case_id, upload_ids=ids, summary=summary
        )
        logger.info("study %s created by %s in case %s", record.study_id, claims.subject, case_id)
        return study_message(record, radiologist=claims.role == "radiologist")

    async def ListStudies(
        self, request: asset_pb2.ListStudiesRequest, context: aio.ServicerContext
    ) -> asset_pb2.ListStudiesResponse:
        records = await asyncio.to_thread(self._store.list_studies, request_case(request.case_id))
        radiologist = current_claims().role == "radiologist"
        return asset_pb2.ListStudiesResponse(
            studies=[study_message(r, radiologist=radiologist) for r in records]
        )
