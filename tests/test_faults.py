"""Faults of issue 20, on real components: a Redis restarted under running nodes or not
there at their start, SIGTERM in the middle of every kind of work, and clients that stop
reading their streams while the server keeps producing (its memory, measured).

A full disk during an upload, a recording and at startup is in ``test_disk_full.py`` (a
real tmpfs, filled) and ``test_video_access.py``; the full disk during a model's
publication is here, on the same tmpfs. The README's "Limits and hardening" lists every
fault with the test that covers it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import redis
from engines import free_port
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis_server import RedisServer

from holo.client import ClientError
from holo.client.retry import RetryPolicy
from holo.client.session import SessionClient
from holo.testing import ServeProcess

CASE = "case-faults"
SESSIONS = "holo.v1.SessionService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ONCE = RetryPolicy(attempts=1)


def health_of(node: ServeProcess, service: str) -> int:
    with grpc.insecure_channel(node.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        return int(reply.status)


def wait_health(node: ServeProcess, service: str, status: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while (now := health_of(node, service)) != status:
        assert time.monotonic() < deadline, f"health of {service!r} stays {now}, not {status}"
        time.sleep(0.1)


def stop_cleanly(node: ServeProcess) -> None:
    """SIGTERM: status 0 and no traceback in the server's log."""
    assert node.stop() == 0, "".join(node.lines[-30:])
    assert not any("Traceback" in line for line in node.lines)


def client(node: ServeProcess, role: str, **kwargs: object) -> SessionClient:
    return SessionClient(
        node.address, token=node.token(role, CASE), insecure=True, retry=ONCE, **kwargs
    )  # type: ignore[arg-type]


async def refused_unavailable(call: Callable[[], object]) -> str:
    """The call must fail UNAVAILABLE, in one line that names the bus; its message."""
    with pytest.raises(ClientError) as caught:
        await call()  # type: ignore[misc]
    err = caught.value
    assert err.code == grpc.StatusCode.UNAVAILABLE, err
    assert "session bus" in str(err) and "\n" not in str(err), err
    return str(err)


async def mark(c: SessionClient, name: str) -> int:
    """A durable event that needs no model: a stroke on a video frame."""
    return await c.telestrate(name, "trk-1", 1, [(0.1, 0.1), (0.2, 0.2)])


def markers(c: SessionClient) -> list[str]:
    return sorted(t for t in c.state.telestrations if t.startswith("m"))


# 1. Redis ----------------------------------------------------------------------------------


def test_redis_restarted_mid_session_keeps_the_log_and_refuses_what_came_meanwhile(
    tmp_path: Path,
) -> None:
    """Redis (persisting, appendfsync always) stops under a live session and comes back on
    its port: meanwhile intents are refused UNAVAILABLE in one line and the session
    services say NOT_SERVING (the node as a whole stays SERVING); afterwards every event
    accepted before is in the log, none refused during it is, an open stream goes on
    without a gap and a new joiner sees the same state."""
    server = RedisServer(persist=True)
    with server as url:
        node = ServeProcess(tmp_path / "data", bus=url, verbose=True)
        try:

            async def body() -> None:
                presenter = client(node, "presenter")
                session_id = (await presenter.create_session()).session_id.value
                await presenter.join(session_id)
                watcher = client(node, "observer")
                await watcher.join(session_id)
                for k in range(5):
                    await mark(presenter, f"m{k}")
                before = presenter.state.seq
                await watcher.wait_seq(before)

                server.stop()  # an operator restarts Redis
                await refused_unavailable(lambda: mark(presenter, "m-lost"))
                await refused_unavailable(lambda: client(node, "expert").find_session())
                await asyncio.to_thread(wait_health, node, SESSIONS, NOT_SERVING)
                assert health_of(node, "") == SERVING  # uploads and models go on
                assert "does not answer" in "".join(node.lines)

                server.start()
                await asyncio.to_thread(wait_health, node, SESSIONS, SERVING)
                seq = await mark(presenter, "m-after")
                await watcher.wait_seq(seq, timeout_s=20)
                late = client(node, "expert")
                await late.join(session_id)
                expected = sorted([f"m{k}" for k in range(5)] + ["m-after"])
                for c in (presenter, watcher, late):
                    assert markers(c) == expected, c.participant_id
                await late.wait_for(lambda c: c.participant_id in c.state.participants)
                await watcher.wait_seq(late.state.seq)
                assert late.state.public_dict() == watcher.state.public_dict(), "".join(node.lines)
                for c in (presenter, watcher, late):
                    await c.close()

            asyncio.run(asyncio.wait_for(body(), 90))
            # The log itself: gap-free, nothing refused half-applied.
            r = redis.Redis.from_url(url)
            (key,) = r.keys("holo:log:*")
            payloads = [fields[b"p"] for _, fields in r.xrange(key)]
            ids = [int(i.split(b"-")[0]) for i, _ in r.xrange(key)]
            assert ids == list(range(1, len(ids) + 1))
            assert not any(b"m-lost" in p for p in payloads)
            assert sum(b'"m-after"' in p for p in payloads) == 1
            r.close()
        finally:
            stop_cleanly(node)


def test_a_node_started_before_redis_waits_not_serving_then_serves(tmp_path: Path) -> None:
    """``holo serve --bus redis://...`` while nothing listens there: the server starts,
    says why in one line, the session services are NOT_SERVING and answer UNAVAILABLE; once
    Redis is up they serve, without a restart."""
    port = free_port()
    node = ServeProcess(tmp_path / "data", bus=f"redis://127.0.0.1:{port}/0")
    try:
        assert health_of(node, SESSIONS) == NOT_SERVING
        assert health_of(node, "") == SERVING
        started = "".join(node.lines)
        assert "does not answer" in started and "NOT_SERVING" in started, started

        async def refused() -> None:
            await refused_unavailable(lambda: client(node, "presenter").create_session())

        asyncio.run(asyncio.wait_for(refused(), 30))
        with RedisServer(port=port):
            wait_health(node, SESSIONS, SERVING)

            async def works() -> None:
                presenter = client(node, "presenter")
                session_id = (await presenter.create_session()).session_id.value
                await presenter.join(session_id)
                await mark(presenter, "m0")
                assert markers(presenter) == ["m0"]
                await presenter.close()

            asyncio.run(asyncio.wait_for(works(), 30))
            stop_cleanly(node)
    finally:
        node.stop()
