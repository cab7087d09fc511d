"""What a ``holo serve`` process's health service says, for the tests that change it."""

from __future__ import annotations

import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from holo.testing import ServeProcess

__all__ = ["NOT_SERVING", "SERVING", "health_of", "wait_health"]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_of(node: ServeProcess, service: str) -> int:
    """The status of ``service`` now (``""``: the server as a whole)."""
    with grpc.insecure_channel(node.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        return int(reply.status)


def wait_health(node: ServeProcess, service: str, status: int, timeout_s: float = 30) -> None:
    """Wait until ``service`` says ``status``; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while (now := health_of(node, service)) != status:
        assert time.monotonic() < deadline, f"health of {service!r} stays {now}, not {status}"
        time.sleep(0.1)
