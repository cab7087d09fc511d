# ruff: noqa: N802  (servicer method names are the RPC names the generated bases require)
"""PacsService: the hospital's PACS for radiologists, thin over :mod:`holo.pacs`.

Searches run in a thread (the PACS may take seconds to answer); pulls run in the server's
:class:`holo.pacs.pulls.PullRunner`. Every method is the radiologist's alone
(:data:`holo.server.interceptors.METHOD_ROLES`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from grpc import aio

from holo.audit import Auditor
from holo.errors import InvalidRequestError
from holo.pacs import PacsNodes, find_studies
from holo.pacs.pulls import PullRunner, PullState
from holo.pacs.push import PushResult, push_audited
from holo.server.access import check_case, request_case
from holo.server.fairpool import FairPool
from holo.server.interceptors import current_claims
from holo.store import Store
from holo.v1 import pacs_pb2, pacs_pb2_grpc
from holo.wire.pacs import node_message, pull_message, study_match_message

__all__ = ["PacsServicer"]

#: The most studies one search returns: a PACS answers a broad query with thousands, and
#: a radiologist narrows it by patient, accession or date instead of paging through them.
MAX_FIND_LIMIT = 1000


class PacsServicer(pacs_pb2_grpc.PacsServiceServicer):
    def __init__(
        self,
        store: Store,
        nodes: PacsNodes,
        pulls: PullRunner,
        *,
        heavy: FairPool,
        audit: Auditor,
        calling_ae: str,
    ) -> None:
        self._store = store
        self._nodes = nodes
        self._pulls = pulls
        self._heavy = heavy
        self._audit = audit
        self._calling_ae = calling_ae

    async def _own_pull(self, pull_id: str) -> PullState:
        state = self._pulls.get(pull_id)
        check_case("pull", pull_id, state.case_id)
        return state

    async def ListPacsNodes(
        self, request: pacs_pb2.ListPacsNodesRequest, context: aio.ServicerContext
    ) -> pacs_pb2.ListPacsNodesResponse:
        nodes = await asyncio.to_thread(self._nodes.list)
        return pacs_pb2.ListPacsNodesResponse(nodes=[node_message(n) for n in nodes])

    async def FindPacsStudies(
        self, request: pacs_pb2.FindPacsStudiesRequest, context: aio.ServicerContext
    ) -> pacs_pb2.FindPacsStudiesResponse:
        if request.limit > MAX_FIND_LIMIT:
            raise InvalidRequestError(
                f"limit {request.limit} is over {MAX_FIND_LIMIT}; narrow the search by "
                "patient, accession or date"
            )
        node = await asyncio.to_thread(self._nodes.get, request.node)
        found = await asyncio.to_thread(
            find_studies,
            node,
            patient_id=request.patient_id,
            accession=request.accession_number,
            modality=request.modality,
            date=request.study_date,
            limit=request.limit or 200,
        )
        return pacs_pb2.FindPacsStudiesResponse(studies=[study_match_message(m) for m in found])

    async def StartPull(
        self, request: pacs_pb2.StartPullRequest, context: aio.ServicerContext
    ) -> pacs_pb2.Pull:
        state = await self._pulls.start(
            case_id=request_case(request.case_id),
            node=request.node,
            study_uid=request.study_instance_uid,
            series_uid=request.series_instance_uid,
            preset=request.convert_preset,
            subject=current_claims().subject,
        )
        return pull_message(state)

    async def WatchPull(
        self, request: pacs_pb2.WatchPullRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pacs_pb2.Pull]:
        await self._own_pull(request.pull_id.value)
        async for state in self._pulls.watch(request.pull_id.value):
            yield pull_message(state)

    async def CancelPull(
        self, request: pacs_pb2.CancelPullRequest, context: aio.ServicerContext
    ) -> pacs_pb2.Pull:
        await self._own_pull(request.pull_id.value)
        return pull_message(await self._pulls.cancel(request.pull_id.value))

    async def PushModel(
        self, request: pacs_pb2.PushModelRequest, context: aio.ServicerContext
    ) -> pacs_pb2.PushModelResponse:
        model = await asyncio.to_thread(self._store.get_model, request.model_id.value)
        check_case("model", model.model_id, model.case_id)
        node = await asyncio.to_thread(self._nodes.get, request.node)
        subject = current_claims().subject

        def run(push: Callable[[], PushResult]) -> Awaitable[PushResult]:
            return self._heavy.run(subject, push)  # taking turns with uploads' indexing

        result = await push_audited(
            self._audit,
            run,
            self._store,
            node,
            model.model_id,
            via=request.via,
            calling_ae=self._calling_ae,
            subject=subject,
        )
        return pacs_pb2.PushModelResponse(
            stl_series_instance_uid=result.stl_series_uid,
            seg_series_instance_uid=result.seg_series_uid,
            stl_sop_instance_uids=list(result.sop_uids[:-1]),
            seg_sop_instance_uid=result.sop_uids[-1],
            via="dicomweb" if result.protocol == "STOW-RS" else "dimse",
        )
