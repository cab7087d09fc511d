# ruff: noqa: N802  (servicer method names are the RPC names the generated bases require)
"""ConversionService: conversion jobs of a case's studies, thin over
:class:`holo.jobs.JobRunner`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from grpc import aio

from holo.jobs import JobRunner
from holo.server.access import check_case, request_case
from holo.server.interceptors import current_claims
from holo.store import JobRecord, Store
from holo.v1 import asset_pb2, asset_pb2_grpc
from holo.wire.asset import job_message

__all__ = ["ConversionServicer"]


class ConversionServicer(asset_pb2_grpc.ConversionServiceServicer):
    def __init__(self, store: Store, jobs: JobRunner) -> None:
        self._store = store
        self._jobs = jobs

    async def _own_job(self, job_id: str) -> JobRecord:
        job = await self._jobs.get(job_id)
        check_case("job", job_id, job.case_id)
        return job

    async def StartConversion(
        self, request: asset_pb2.StartConversionRequest, context: aio.ServicerContext
    ) -> asset_pb2.Job:
        study = await asyncio.to_thread(self._store.get_study, request.study_id.value)
        check_case("study", study.study_id, study.case_id)
        job = await self._jobs.start(
            study_id=study.study_id,
            case_id=study.case_id,
            preset=request.preset,
            series_uid=request.series_instance_uid,
            subject=current_claims().subject,
        )
        return job_message(job)

    async def WatchJob(
        self, request: asset_pb2.WatchJobRequest, context: aio.ServicerContext
    ) -> AsyncIterator[asset_pb2.Job]:
        await self._own_job(request.job_id.value)
        async for job in self._jobs.watch(request.job_id.value):
            yield job_message(job)

    async def CancelJob(
        self, request: asset_pb2.CancelJobRequest, context: aio.ServicerContext
    ) -> asset_pb2.Job:
        await self._own_job(request.job_id.value)
        return job_message(await self._jobs.cancel(request.job_id.value))

    async def ListJobs(
        self, request: asset_pb2.ListJobsRequest, context: aio.ServicerContext
    ) -> asset_pb2.ListJobsResponse:
        jobs = await self._jobs.list(request_case(request.case_id))
        return asset_pb2.ListJobsResponse(jobs=[job_message(j) for j in jobs])
