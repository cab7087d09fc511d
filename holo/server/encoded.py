"""Encode once: a message every subscriber of a session (or viewer of a track) is sent is
built and serialised once, not once per stream.

A servicer keeps an :class:`EncodeOnce` per kind of shared object (an event, an ephemeral
frame, a video frame) and yields the bytes it returns; the service is registered with
:func:`add_servicer`, whose serializer passes bytes through (and serialises anything else
as the generated code would).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import FileDescriptor
from grpc import aio

__all__ = ["EncodeOnce", "add_servicer", "serialize"]

T = TypeVar("T")
R = TypeVar("R")


class EncodeOnce(Generic[T, R]):
    """The wire form of shared objects (a message, or its bytes), made on first use and
    kept for the streams still to send them.

    Keyed by ``id(obj)``, holding ``obj`` so the id cannot be reused while cached. Bounded
    by ``max_items``, by ``max_bytes`` (of ``size(obj, encoded)``) and by ``max_age_s``
    (seconds since it was encoded, on ``clock``): a few seconds of what a node sends, the
    oldest out first. Keep the bound small for objects that are sent only within a short
    interval (an ephemeral frame, a video frame): entries kept longer would only hold memory
    and age into the collector's oldest generation, whose collections pause the loop.
    A byte bound alone is no bound in time: the video frames' 64 MiB (each frame counted
    twice, its data and its message) are 32 s of an 8 Mbit/s camera but 16 minutes of the
    0.3 Mbit/s clip of ``benchmarks/soak.py``, whose server grew by about 5 MB a minute
    while they filled.
    """

    def __init__(
        self,
        encode: Callable[[T], R],
        *,
        max_items: int,
        max_bytes: int = 1 << 62,
        max_age_s: float = math.inf,
        size: Callable[[T, R], int] = lambda obj, encoded: 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._encode = encode
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._max_age_s = max_age_s
        self._size = size
        self._clock = clock
        # id(obj) -> (obj, its wire form, bytes counted, when encoded), oldest first
        self._cache: OrderedDict[int, tuple[T, R, int, float]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._cache)

    def __call__(self, obj: T) -> R:
        cached = self._cache.get(id(obj))
        if cached is not None and cached[0] is obj:
            return cached[1]
        data = self._encode(obj)
        held = self._size(obj, data)
        now = self._clock()
        self._cache[id(obj)] = (obj, data, held, now)
        self._bytes += held
        while len(self._cache) > 1 and (
            len(self._cache) > self._max_items
            or self._bytes > self._max_bytes
            or now - next(iter(self._cache.values()))[3] > self._max_age_s
        ):
            _, (_, _, old, _) = self._cache.popitem(last=False)
            self._bytes -= old
        return data


def serialize(message: Any) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def add_servicer(servicer: Any, server: aio.Server, proto: FileDescriptor, service: str) -> None:
    """Register ``servicer`` for ``service`` of ``proto`` (a ``*_pb2.DESCRIPTOR``) as the
    generated ``add_*Servicer_to_server`` would, with :func:`serialize` for replies."""
    descriptor = proto.services_by_name[service]
    handlers = {}
    for method in descriptor.methods:
        if method.client_streaming:
            raise ValueError(f"{method.full_name}: only unary and server-streaming RPCs")
        request = message_factory.GetMessageClass(method.input_type)
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=request.FromString,
            response_serializer=serialize,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(descriptor.full_name, handlers),)
    )
