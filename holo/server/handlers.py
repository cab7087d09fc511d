"""One table of the server's method handlers, for both transports.

Every servicer is registered once, on a :class:`HandlerTable`, which hands the handlers to
the grpc.aio server (the native port) and keeps them for the gRPC-Web / Connect port
(:mod:`holo.server.web`). :meth:`HandlerTable.resolve` runs the same interceptors, in the
same order, as grpc.aio does for a native call, so a web call gets the same token check,
role matrix, late decoding, error mapping and audit: one implementation, two transports.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import grpc
from grpc import aio

__all__ = ["CallDetails", "HandlerTable"]


class CallDetails(NamedTuple):
    """What an interceptor is told of a call (grpc.HandlerCallDetails' two fields)."""

    method: str
    invocation_metadata: tuple[tuple[str, str | bytes], ...]


class HandlerTable:
    """Collects what the generated ``add_*Servicer_to_server`` functions register, passes
    it on to ``server`` and resolves a method to its intercepted handler.

    It stands in for the server in those functions: they call
    :meth:`add_generic_rpc_handlers` and, in recent grpcio, :meth:`add_registered_method_handlers`.
    """

    def __init__(
        self, server: aio.Server | None, interceptors: Sequence[aio.ServerInterceptor]
    ) -> None:
        self._server = server
        self._interceptors = tuple(interceptors)
        self._generic: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        if self._server is not None:
            self._server.add_generic_rpc_handlers(handlers)
        self._generic.extend(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        # The same handlers were given to add_generic_rpc_handlers just before: registered
        # methods only spare grpc.aio a lookup, so this table needs nothing of them.
        if self._server is not None:
            self._server.add_registered_method_handlers(service, handlers)

    def _find(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        for generic in self._generic:
            handler = generic.service(details)
            if handler is not None:
                return handler
        return None

    async def resolve(
        self, method: str, metadata: Sequence[tuple[str, str | bytes]]
    ) -> grpc.RpcMethodHandler | None:
        """The handler of ``method`` (``/package.Service/Method``) for a call with
        ``metadata``, wrapped by the interceptors as grpc.aio wraps it: the first
        interceptor outermost. None for a method no service has."""
        details = CallDetails(method, tuple(metadata))

        def chain(
            index: int,
        ) -> Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]:
            async def next_handler(d: grpc.HandlerCallDetails) -> Any:
                if index == len(self._interceptors):
                    return self._find(d)
                return await self._interceptors[index].intercept_service(chain(index + 1), d)

            return next_handler

        return await chain(0)(details)
