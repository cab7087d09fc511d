"""ClockService and the SDK's ClockSync against a real server, directly and through a path
with added delay and jitter (tests/netdelay.py, a real TCP proxy)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc import aio
from netdelay import DelayProxy

from holo.client import ClientError
from holo.client.clock import ClockSync
from holo.testing import TestServer

SKEW_NS = -123_456_789_012  # the client's clock runs this far from its monotonic clock


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServer]:
    with TestServer(tmp_path_factory.mktemp("clock")) as running:
        yield running


def true_offset(server: TestServer) -> int:
    """Session clock minus the client's clock: both read this process's monotonic clock."""
    assert server.running is not None
    clock = server.running.hub.clock
    return clock._wall0 - clock._mono0 - SKEW_NS


def local() -> int:
    return time.monotonic_ns() + SKEW_NS


async def _estimate(server: TestServer, port: int, count: int) -> ClockSync:
    metadata = (("authorization", f"Bearer {server.token('observer')}"),)
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        sync = ClockSync(channel, metadata=metadata, local_ns=local, window=count)
        await sync.sync_many(count, interval_s=0.005)
        return sync


def test_offset_on_loopback(server: TestServer) -> None:
    sync = asyncio.run(_estimate(server, server.port, 16))
    error = sync.offset_ns - true_offset(server)
    assert abs(error) < 1_000_000, f"offset error {error / 1e6:.3f} ms"
    assert sync.rate == 1.0 and sync.epoch == 0
    # to_session and to_local are inverses; now() is the session clock now.
    assert abs(sync.to_local(sync.to_session(12345)) - 12345) <= 1
    assert abs(sync.now() - server.running.hub.clock.now_ns()) < 5_000_000  # type: ignore[union-attr]


def test_offset_under_delay_and_jitter(server: TestServer) -> None:
    """2 ms each way plus up to 3 ms of jitter each way (round trips of 4-10 ms). A sample's
    error is at most half its round trip (how unevenly the two directions were delayed), so
    the average of the least-delayed samples is within half the largest of their round trips:
    the bound NTP gives, and which the estimate must keep whatever the jitter drew. (How
    close it comes to 0 depends on the draw and on scheduling: typically 0.1-0.6 ms here,
    once 1.008 ms on a loaded CI run, which is why 1 ms is not asserted.)"""

    async def body() -> tuple[ClockSync, list[int]]:
        proxy = await DelayProxy(server.port, base_s=0.002, jitter_s=0.003).start()
        try:
            sync = await _estimate(server, proxy.port, 32)
        finally:
            await proxy.close()
        singles = [s.offset_ns - true_offset(server) for s in sync.samples]
        return sync, singles

    sync, singles = asyncio.run(body())
    assert sync.delay_ns >= 4_000_000, "the proxy's delay is not on the path"
    averaged = sorted(sync.samples, key=lambda s: s.delay_ns)[:3]
    bound = max(s.delay_ns for s in averaged) // 2 + 1_000  # + rounding of the midpoints
    error = sync.offset_ns - true_offset(server)
    assert abs(error) <= bound, (
        f"offset error {error / 1e6:.3f} ms exceeds half the round trip of the samples it "
        f"averages ({bound / 1e6:.3f} ms); single samples were off by up to "
        f"{max(map(abs, singles)) / 1e6:.3f} ms"
    )
    # Every single sample keeps its own bound too (a wrong t2/t3 or midpoint breaks this).
    for sample, single in zip(sync.samples, singles, strict=True):
        assert abs(single) <= sample.delay_ns // 2 + 1_000


def test_unsynced_clock_is_a_clear_error(tmp_path: Path) -> None:
    async def body() -> None:
        async with aio.insecure_channel("127.0.0.1:9") as channel:
            sync = ClockSync(channel)
            with pytest.raises(ClientError, match="not been synced"):
                sync.now()

    asyncio.run(body())


def test_unknown_replay_clock_is_not_found(server: TestServer) -> None:
    async def body() -> None:
        metadata = (("authorization", f"Bearer {server.token('observer')}"),)
        async with aio.insecure_channel(server.address) as channel:
            sync = ClockSync(channel, metadata=metadata, session_id="rpl-000000000000")
            with pytest.raises(ClientError, match="NOT_FOUND"):
                await sync.sync()

    asyncio.run(body())
