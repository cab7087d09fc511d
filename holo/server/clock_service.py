# ruff: noqa: N802  (servicer method names are the RPC names the generated bases require)
"""ClockService: the session clock as NTP-style timestamps (the node's, or a replay's own)."""

from __future__ import annotations

from grpc import aio

from holo.server.access import SessionAccess
from holo.session.clock import Clock
from holo.v1 import clock_pb2, clock_pb2_grpc

__all__ = ["ClockServicer"]


class ClockServicer(clock_pb2_grpc.ClockServiceServicer):
    """``Sync`` without a session id answers with the node's live session clock; with one,
    with that session's clock (a replay's runs at its speed and jumps on a seek)."""

    def __init__(self, access: SessionAccess) -> None:
        self._access = access

    async def Sync(
        self, request: clock_pb2.SyncRequest, context: aio.ServicerContext
    ) -> clock_pb2.SyncReply:
        clock: Clock = self._access.sessions.clock
        if request.session_id.value:
            clock = (await self._access.session(request.session_id.value)).clock
        received = clock.now_ns()
        return clock_pb2.SyncReply(
            client_send_ns=request.client_send_ns,
            server_receive_ns=received,
            server_send_ns=clock.now_ns(),
            rate=clock.rate,
            epoch=clock.epoch,
        )
