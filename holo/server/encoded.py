"""Registering a service whose streamed replies may be bytes serialised already.

A message every subscriber of a session (or viewer of a track) is sent is built and
serialised once, not once per stream: the servicer yields those bytes, and the service is
registered with a serializer that passes bytes through (and serialises anything else as
the generated code would).
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import FileDescriptor
from grpc import aio

__all__ = ["add_servicer", "serialize"]


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
