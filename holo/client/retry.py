"""The one retry policy of the SDK: which failures to retry, how often, how long to wait.

Transient failures (the node is unreachable, a deadline passed) are retried with an
exponential back-off, from 50 ms doubling up to ``max_delay_s``: a headset on hospital
Wi-Fi that drops for a second resumes within ~100 ms of the link coming back, and a
node that is down is not hammered.

Uploads and downloads also retry for ``window_s`` seconds of failures in a row, however
many attempts that takes: a server restart took 2.8 s when probed, longer than the five
attempts (~3 s) alone last, and a restart after an upgrade or on a loaded host takes
longer still. :data:`TRANSFER_RETRY` gives them 60 s (about 30 attempts 2 s apart once
the back-off is at its cap): twenty times the measured restart, and still an answer
within a minute for a user at a terminal when the server is really gone.

A call the server refused for a rate limit (RESOURCE_EXHAUSTED with the trailer
``holo-retry-after-ms``, :mod:`holo.server.ratelimit`) is retried after the time the
server names, when that is at most ``max_rate_wait_s`` (5 s: a burst of intents or joins
refills in well under a second at the default rates; a longer wait is the server saying
no, which the caller should hear). RESOURCE_EXHAUSTED without that trailer is a size
limit or a full disk and is never retried. Intents are safe to send again: each carries
an ``intent_id`` the server answers a second time with the same seq.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

__all__ = ["TRANSFER_RETRY", "RetryPolicy", "retry_after_s"]

#: The trailer of a rate-limit refusal: when the same call succeeds again, in ms.
RETRY_AFTER_TRAILER = "holo-retry-after-ms"


def retry_after_s(err: grpc.RpcError) -> float | None:
    """The wait a rate-limit refusal names (RESOURCE_EXHAUSTED with
    ``holo-retry-after-ms``), in seconds; None for any other failure."""
    # grpc.Call (the blocking API) and grpc.aio.AioRpcError both have code() and trailers.
    code = getattr(err, "code", None)
    if code is None or code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    for key, value in err.trailing_metadata() or ():
        if key == RETRY_AFTER_TRAILER:
            try:
                return max(0.0, int(value) / 1000)
            except (TypeError, ValueError):
                return None
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """Retry ``codes`` up to ``attempts`` times, or for as long as the failures in a row
    have lasted less than ``window_s`` seconds, waiting :meth:`delay_s` before each."""

    attempts: int = 5
    first_delay_s: float = 0.05
    max_delay_s: float = 2.0
    codes: frozenset[grpc.StatusCode] = frozenset(
        {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
    )
    window_s: float = 0.0
    #: Wait out a rate-limit refusal whose named wait is at most this (0: never).
    max_rate_wait_s: float = 5.0

    def retryable(
        self, code: grpc.StatusCode | None, failures: int, elapsed_s: float = 0.0
    ) -> bool:
        """Whether the ``failures``-th failure in a row, with ``code``, is retried;
        ``elapsed_s`` is how long ago the first of them was."""
        if code not in self.codes:
            return False
        return failures <= self.attempts or elapsed_s < self.window_s

    def wait_s(self, err: grpc.RpcError, failures: int, elapsed_s: float = 0.0) -> float | None:
        """How long to wait before sending again after ``err``, the ``failures``-th
        failure in a row; None: do not send again. A rate-limit refusal names its wait
        (up to :attr:`max_rate_wait_s`, for at most ``attempts`` refusals in a row)."""
        hint = retry_after_s(err)
        if hint is not None:
            return hint if hint <= self.max_rate_wait_s and failures <= self.attempts else None
        code = err.code() if hasattr(err, "code") else None
        return self.delay_s(failures) if self.retryable(code, failures, elapsed_s) else None

    def delay_s(self, failures: int) -> float:
        """The wait before retrying after the ``failures``-th failure in a row."""
        return min(self.first_delay_s * 2**failures, self.max_delay_s)


#: What an SDK client's uploads and downloads retry with by default (see above).
TRANSFER_RETRY = RetryPolicy(window_s=60.0)
