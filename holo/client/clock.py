"""The session clock as a client sees it: NTP-style sync against ``ClockService``.

Each :meth:`ClockSync.sync` is one exchange of the four timestamps (RFC 5905, section 8):
t1 and t4 on the client's own monotonic clock, t2 and t3 on the session clock. A sample's
error is at most half its round-trip delay (the asymmetry of the two directions), so the
estimate keeps the last ``window`` samples and averages the offsets of the ``best`` with the
least delay, the clock filter of NTP in small. A replay's clock runs at its speed and jumps
on a seek: every reply carries the clock's ``rate`` and ``epoch``, and samples of an older
epoch are dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from holo.client.channel import ClientError, client_error
from holo.v1 import clock_pb2, clock_pb2_grpc, common_pb2

__all__ = ["ClockSample", "ClockSync"]


@dataclass(frozen=True, slots=True)
class ClockSample:
    """One exchange. ``offset_ns``: session clock minus local clock at the local midpoint
    ``local_mid_ns``; ``delay_ns``: the round trip less the server's own time."""

    local_mid_ns: int
    session_mid_ns: int
    delay_ns: int
    rate: float
    epoch: int

    @property
    def offset_ns(self) -> int:
        return self.session_mid_ns - self.local_mid_ns


class ClockSync:
    """A filtered estimate of the session clock for one channel.

    Parameters
    ----------
    channel
        A ``grpc.aio`` channel to a holo node.
    metadata
        The call metadata (the bearer token).
    session_id
        Empty: the node's live session clock; a replay session's id: that replay's clock.
    local_ns
        The client's clock (monotonic nanoseconds); a test passes one with a known offset.
    window, best
        Samples kept, and how many of the least-delayed are averaged.
    """

    def __init__(
        self,
        channel: aio.Channel,
        *,
        metadata: tuple[tuple[str, str], ...] = (),
        session_id: str = "",
        local_ns: Callable[[], int] = time.monotonic_ns,
        window: int = 16,
        best: int = 3,
    ) -> None:
        self._stub = clock_pb2_grpc.ClockServiceStub(channel)
        self._metadata = metadata
        self._session_id = session_id
        self.local_ns = local_ns
        self._window = window
        self._best = best
        self.samples: list[ClockSample] = []
        self.rate = 1.0
        self.epoch: int | None = None

    async def sync(self) -> ClockSample:
        """One exchange; the sample joins the estimate (a new epoch starts it afresh)."""
        request = clock_pb2.SyncRequest(session_id=common_pb2.SessionId(value=self._session_id))
        t1 = self.local_ns()
        request.client_send_ns = t1
        try:
            reply: Any = await self._stub.Sync(request, metadata=self._metadata, timeout=5)
        except aio.AioRpcError as err:
            raise client_error(err) from None
        t4 = self.local_ns()
        if reply.client_send_ns != t1:
            raise ClientError(
                "the clock reply does not echo our t1; is a proxy caching calls?",
                code=grpc.StatusCode.DATA_LOSS,
            )
        t2, t3, rate = reply.server_receive_ns, reply.server_send_ns, reply.rate
        # The server's own time in session nanoseconds, as real time.
        served = (t3 - t2) / rate if rate > 0 else 0.0
        sample = ClockSample(
            local_mid_ns=(t1 + t4) // 2,
            session_mid_ns=(t2 + t3) // 2,
            delay_ns=max(0, round((t4 - t1) - served)),
            rate=rate,
            epoch=reply.epoch,
        )
        if sample.epoch != self.epoch:
            self.samples.clear()
            self.epoch = sample.epoch
        self.rate = rate
        self.samples.append(sample)
        del self.samples[: -self._window]
        return sample

    async def sync_many(self, count: int = 8, interval_s: float = 0.01) -> None:
        """``count`` exchanges, ``interval_s`` apart: a fresh estimate."""
        for k in range(count):
            await self.sync()
            if k + 1 < count:
                await asyncio.sleep(interval_s)

    def _reference(self) -> tuple[int, int]:
        """A (local, session) pair on the estimated line, from the least-delayed samples."""
        if not self.samples:
            raise ClientError(
                "the clock has not been synced; call sync() first",
                code=grpc.StatusCode.FAILED_PRECONDITION,
            )
        best = sorted(self.samples, key=lambda s: s.delay_ns)[: self._best]
        ref = best[0].local_mid_ns
        # Each sample's session time carried to the same local instant, then averaged.
        # (Integers: session times near 1.8e18 ns lose precision as floats.)
        at_ref = [s.session_mid_ns + round(self.rate * (ref - s.local_mid_ns)) for s in best]
        return ref, sum(at_ref) // len(at_ref)

    @property
    def offset_ns(self) -> int:
        """Session clock minus local clock (at rate 1; at the reference point otherwise)."""
        ref, session = self._reference()
        return session - ref

    @property
    def delay_ns(self) -> int:
        """The least round-trip delay seen: twice the bound on the estimate's error."""
        return min(s.delay_ns for s in self.samples) if self.samples else 0

    def to_session(self, local_ns: int) -> int:
        """A local clock reading as session time."""
        ref, session = self._reference()
        return session + round(self.rate * (local_ns - ref))

    def to_local(self, session_ns: int) -> int:
        """Session time as a local clock reading (the rate must be > 0)."""
        ref, session = self._reference()
        if self.rate <= 0:
            raise ClientError(
                "the session clock is paused", code=grpc.StatusCode.FAILED_PRECONDITION
            )
        return ref + round((session_ns - session) / self.rate)

    def now(self) -> int:
        """The session clock now, as estimated."""
        return self.to_session(self.local_ns())
