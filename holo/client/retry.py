"""The one retry policy of the SDK: which failures to retry, how often, how long to wait.

Transient failures (the node is unreachable, a deadline passed) are retried with an
exponential back-off, from 50 ms doubling up to ``max_delay_s``: a headset on hospital
Wi-Fi that drops for a second resumes within ~100 ms of the link coming back, and a
node that is down is not hammered.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """Retry ``codes`` up to ``attempts`` times, waiting :meth:`delay_s` before each."""

    attempts: int = 5
    first_delay_s: float = 0.05
    max_delay_s: float = 2.0
    codes: frozenset[grpc.StatusCode] = frozenset(
        {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
    )

    def retryable(self, code: grpc.StatusCode | None, failures: int) -> bool:
        """Whether the ``failures``-th failure in a row, with ``code``, is retried."""
        return code in self.codes and failures <= self.attempts

    def delay_s(self, failures: int) -> float:
        """The wait before retrying after the ``failures``-th failure in a row."""
        return min(self.first_delay_s * 2**failures, self.max_delay_s)
