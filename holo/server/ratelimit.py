"""Per-subject rate limits: token buckets for joins, intents, ephemeral values and uploads,
and a cap on the server streams one subject holds open.

Applied in one place, :class:`RateLimitInterceptor`, after the token check (the bucket is
the token's subject, :attr:`holo.auth.Claims.subject`), on both ports (the web port runs
the same interceptors). A call over a limit is RESOURCE_EXHAUSTED
(:class:`~holo.errors.RateLimitError`) in one line naming the limit, its ``--rate-limit``
name and when to retry; the same hint goes in the trailing metadata ``holo-retry-after-ms``
(whole milliseconds) for clients that back off by it. Upload bytes and upload starts are
*throttled* instead: a call that would go over waits until the bucket has room, when that
is at most :data:`MAX_UPLOAD_WAIT_S`, so an upload at its limit slows down rather than fails.

The buckets are this node's, in memory: nodes sharing a bus or a store keep their own, so
a subject spread over ``n`` nodes may reach ``n`` times a rate. That is enough to keep one
runaway client (a retry loop, a pose sent every event-loop turn) from starving the others
on a node, which is what these limits are for; they are not a quota.

Defaults come from what the clients really send (numbers in :class:`RateLimits`), so that
no legitimate use meets them: a headset at 90 Hz sending head pose and drag every frame, a
web page beside it on the same token, a DICOM folder uploaded file by file at LAN speed,
and a crowd of observers sharing one token are all under every default.

Example::

    limits = RateLimits().replaced(["intent_per_s=5", "streams=16"])  # holo serve --rate-limit
    interceptor = RateLimitInterceptor(RateLimiter(limits))
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

import grpc
from grpc import aio

from holo.errors import InvalidRequestError, RateLimitError
from holo.server.decoding import Behavior, wrap_handler
from holo.server.interceptors import current_claims

__all__ = [
    "EXEMPT",
    "MAX_UPLOAD_WAIT_S",
    "METHOD_BUCKETS",
    "STREAMS",
    "RateLimitInterceptor",
    "RateLimiter",
    "RateLimits",
]

#: Longest an upload call is held back to stay within its rate before it is refused: a
#: client's chunk call has no deadline by default, and 5 s is far inside any it may set.
MAX_UPLOAD_WAIT_S = 5.0

_MIB = 1 << 20


@dataclass(frozen=True)
class RateLimits:
    """Per subject and node. A ``*_per_s`` is a bucket's refill rate, a ``*_burst`` its
    size (what may be spent at once after a quiet spell); ``0`` turns that limit off.

    Where the numbers come from (``holo/client/session.py``, ``holo/web/src``,
    ``holo/testing/simulate.py``, ``unity_bridge/Runtime/HoloSession.cs``):
    """

    #: Join calls. A client joins once and rejoins on a broken stream after the SDK's
    #: back-off (50 ms doubling to 2 s: at most ~5 in the first second, then 0.5/s).
    #: Observers often share one token: ``holo simulate`` joins its 100 observers with one,
    #: 50 at a time, and a looping observer was measured at 78 joins/s (issue 14). 100 at
    #: once, then 5 a second: a crowd of 100 on one token joins together, a loop is held
    #: to 5 joins a second (each costs a snapshot of up to 3.3 MB).
    join_per_s: float = 5.0
    join_burst: float = 100.0
    #: Durable intents (load, anchor, annotations, telestration, control): each grows the
    #: session's log and goes to every subscriber. People make them: the simulator's
    #: presenter commits an anchor every second and annotates every 3 s, an expert strokes
    #: every 5 s; the page commits on release. 20 a second is far above a hand; a burst of
    #: 300 lets a client remove every annotation (256 at most) at once.
    intent_per_s: float = 20.0
    intent_burst: float = 300.0
    #: Ephemeral values (head pose, pointer, drag). The page sends head pose and drag at
    #: 30 Hz and the pointer at 20 Hz (80/s); the simulator's presenter sends drag and head
    #: pose at 60 Hz (120/s) and two experts point at 30 Hz; a native headset calling per
    #: frame at 90 Hz (HoloLens 2, Quest) with head pose and drag is 180/s. 300 a second
    #: leaves that headset and the page on one token (260/s) both unrefused; the burst of
    #: 600 (2 s) absorbs what a client queued while Wi-Fi stalled.
    ephemeral_per_s: float = 300.0
    ephemeral_burst: float = 600.0
    #: Upload bytes (UploadChunk data), throttled. 128 MiB/s is above gigabit Ethernet
    #: (119 MiB/s), so a workstation's upload is never slowed; a faster link is shared
    #: between subjects instead of taken by one. The burst is 256 chunks of 1 MiB.
    upload_bytes_per_s: float = 128.0 * _MIB
    upload_bytes_burst: float = 256.0 * _MIB
    #: Uploads started (StartUpload), throttled: ``holo upload`` of a folder starts one per
    #: DICOM file; a thin-slice CT series is up to ~2,000 files of ~0.5 MB, which at the
    #: byte rate above is ~250 files a second. Each start is a catalog row and a file.
    upload_starts_per_s: float = 250.0
    upload_starts_burst: float = 2000.0
    #: Server streams open at once (Join, WatchVideo, WatchJob, GetModel, WatchPull). One
    #: person's headset holds a Join, a WatchVideo per track (8 at most) and a few model
    #: downloads; a token shared by a crowd of observers holds one Join each (the
    #: simulator: 100 by default). 256 holds both; each stream is a subscription in memory.
    streams: int = 256

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not math.isfinite(value) or value < 0:
                raise InvalidRequestError(f"rate limit {f.name} must be 0 (off) or positive")

    def replaced(self, settings: Iterable[str]) -> RateLimits:
        """These limits with ``NAME=VALUE`` settings applied (``holo serve --rate-limit``).

        Raises
        ------
        InvalidRequestError
            A name that is not a limit, or a value that is not a number of 0 or more.
        """
        changes: dict[str, float] = {}
        names = [f.name for f in fields(self)]
        for setting in settings:
            name, _, value = setting.partition("=")
            if name not in names:
                raise InvalidRequestError(
                    f"--rate-limit {name[:40]!r} is not a rate limit; use NAME=VALUE "
                    f"with NAME one of {', '.join(names)}"
                )
            try:
                number = float(value)
            except ValueError:
                raise InvalidRequestError(
                    f"--rate-limit {name}: {value[:40]!r} is not a number"
                ) from None
            if name == "streams":
                if not number.is_integer():
                    raise InvalidRequestError(f"--rate-limit streams: {value!r} is not whole")
                number = int(number)
            changes[name] = number
        return replace(self, **changes)  # type: ignore[arg-type]


#: holo.v1 method -> the bucket it spends from. Heartbeat and Leave spend nothing (see
#: :data:`EXEMPT`).
METHOD_BUCKETS: dict[str, str] = {
    "/holo.v1.SessionService/Join": "join",
    **{
        f"/holo.v1.SessionService/{name}": "intent"
        for name in (
            "LoadModel",
            "CommitAnchor",
            "Register",
            "AddAnnotation",
            "RemoveAnnotation",
            "Telestrate",
            "RequestControl",
            "GrantControl",
            "RevokeControl",
        )
    },
    **{
        f"/holo.v1.SessionService/{name}": "ephemeral"
        for name in ("Drag", "UpdateHeadPose", "UpdatePointer")
    },
    "/holo.v1.UploadService/StartUpload": "upload_starts",
    "/holo.v1.UploadService/UploadChunk": "upload_bytes",
}
#: SessionService methods deliberately outside every bucket: a refused heartbeat would
#: mark a present participant away, a refused leave would keep a gone one in the session;
#: both are one per participant per 2 s at most. CreateSession and FindSession change no
#: state (a case has one session).
EXEMPT = frozenset(
    f"/holo.v1.SessionService/{name}"
    for name in ("Heartbeat", "Leave", "CreateSession", "FindSession")
)
#: Server-streaming methods counted against ``streams``.
STREAMS = frozenset(
    {
        "/holo.v1.SessionService/Join",
        "/holo.v1.VideoService/WatchVideo",
        "/holo.v1.ConversionService/WatchJob",
        "/holo.v1.AssetService/GetModel",
        "/holo.v1.PacsService/WatchPull",
    }
)
_THROTTLED = frozenset({"upload_bytes", "upload_starts"})
_WHAT = {
    "join": ("session joins", "joins"),
    "intent": ("session changes", "intents"),
    "ephemeral": ("pose, pointer and drag updates", "updates"),
    "upload_bytes": ("upload bytes", "bytes"),
    "upload_starts": ("uploads started", "uploads"),
}


class _Bucket:
    """A token bucket: ``level`` tokens at ``stamp``, refilled at the bucket's rate."""

    __slots__ = ("level", "stamp")

    def __init__(self, level: float, stamp: float) -> None:
        self.level = level
        self.stamp = stamp


class RateLimiter:
    """The buckets and stream counts of one node, keyed by token subject.

    ``clock`` is monotonic seconds (a test may pass its own).
    """

    def __init__(
        self, limits: RateLimits | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or RateLimits()
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._streams: dict[str, int] = {}
        self._spent = 0

    def take(
        self, bucket: str, subject: str, cost: float = 1.0, *, max_wait_s: float = 0.0
    ) -> float:
        """Spend ``cost`` from ``subject``'s ``bucket``; the seconds the caller must wait
        before going on (0: at once; more only when ``max_wait_s`` allows it: the tokens
        are then spent ahead, so callers queue in order).

        Raises
        ------
        RateLimitError
            It would take longer than ``max_wait_s`` (nothing is spent).
        """
        rate = getattr(self.limits, f"{bucket}_per_s")
        burst = getattr(self.limits, f"{bucket}_burst")
        if rate == 0 or burst == 0:
            return 0.0
        now = self._clock()
        self._prune(now)
        state = self._buckets.get((bucket, subject))
        if state is None:
            state = self._buckets[(bucket, subject)] = _Bucket(burst, now)
        state.level = min(burst, state.level + (now - state.stamp) * rate)
        state.stamp = now
        # A cost bigger than the bucket (a chunk above the burst) goes once the bucket is full.
        needed = min(cost, burst)
        wait = max(0.0, (needed - state.level) / rate)
        if wait > max_wait_s:
            what, unit = _WHAT[bucket]
            raise RateLimitError(
                f"too many {what} from this user: {_amount(rate)} {unit} a second, "
                f"{_amount(burst)} at once (holo serve --rate-limit {bucket}_per_s, "
                f"{bucket}_burst); retry in {_seconds(wait)}",
                retry_after_s=wait,
            )
        state.level -= cost
        return wait

    def open_stream(self, subject: str) -> Callable[[], None]:
        """Count one more open stream of ``subject``; returns what closes it (call once).

        Raises
        ------
        RateLimitError
            ``subject`` holds ``streams`` open already.
        """
        cap = self.limits.streams
        count = self._streams.get(subject, 0)
        if cap and count >= cap:
            raise RateLimitError(
                f"too many open streams for this user: {cap} at once (joins, video, job and "
                "pull watches, model downloads; holo serve --rate-limit streams); retry when "
                "one of them has ended",
                retry_after_s=1.0,
            )
        self._streams[subject] = count + 1
        closed = False

        def close() -> None:
            nonlocal closed
            if closed:
                return
            closed = True
            left = self._streams.get(subject, 1) - 1
            if left > 0:
                self._streams[subject] = left
            else:
                self._streams.pop(subject, None)

        return close

    def open_streams(self, subject: str) -> int:
        """How many streams ``subject`` holds open on this node."""
        return self._streams.get(subject, 0)

    def _prune(self, now: float) -> None:
        """Every 4,096 calls, forget the buckets that are full again: a full bucket is what
        a new one would be, so the map holds only subjects active in the last burst time."""
        self._spent += 1
        if self._spent % 4096:
            return
        for key, state in list(self._buckets.items()):
            bucket = key[0]
            rate = getattr(self.limits, f"{bucket}_per_s")
            burst = getattr(self.limits, f"{bucket}_burst")
            if state.level + (now - state.stamp) * rate >= burst:
                del self._buckets[key]


def _amount(value: float) -> str:
    if value >= _MIB and value % _MIB == 0:
        return f"{value / _MIB:g} MiB of"
    return f"{value:g}"


def _seconds(wait: float) -> str:
    return f"{max(wait, 0.001):.3g} s"


class RateLimitInterceptor(aio.ServerInterceptor):
    """Applies a :class:`RateLimiter` to every holo.v1 call it covers (:data:`METHOD_BUCKETS`,
    :data:`STREAMS`). Goes after :class:`~holo.server.interceptors.AuthInterceptor`, so the
    caller's claims are known and requests are parsed."""

    def __init__(self, limiter: RateLimiter) -> None:
        super().__init__()
        self.limiter = limiter

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        bucket = METHOD_BUCKETS.get(method)
        counted = method in STREAMS
        if handler is None or (bucket is None and not counted):
            return handler
        limiter = self.limiter

        async def spend(request: Any) -> None:
            if bucket is None:
                return
            subject = current_claims().subject
            # Upload bytes cost what the chunk carries; every other call costs one.
            cost = float(len(request.data)) if bucket == "upload_bytes" else 1.0
            wait = limiter.take(
                bucket,
                subject,
                cost,
                max_wait_s=MAX_UPLOAD_WAIT_S if bucket in _THROTTLED else 0.0,
            )
            if wait > 0:
                await asyncio.sleep(wait)

        def limit(behavior: Behavior, streaming: bool) -> Behavior:
            if streaming:

                async def stream(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
                    close = limiter.open_stream(current_claims().subject) if counted else None
                    try:
                        await spend(request)
                        replies = behavior(request, context)
                        try:
                            async for item in replies:
                                yield item
                        finally:
                            if hasattr(replies, "aclose"):
                                await replies.aclose()
                    finally:
                        if close is not None:
                            close()

                return stream

            async def unary(request: Any, context: aio.ServicerContext) -> Any:
                await spend(request)
                return await behavior(request, context)

            return unary

        return wrap_handler(handler, limit)
