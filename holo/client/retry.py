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
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

__all__ = ["TRANSFER_RETRY", "RetryPolicy"]


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

    def retryable(
        self, code: grpc.StatusCode | None, failures: int, elapsed_s: float = 0.0
    ) -> bool:
        """Whether the ``failures``-th failure in a row, with ``code``, is retried;
        ``elapsed_s`` is how long ago the first of them was."""
        if code not in self.codes:
            return False
        return failures <= self.attempts or elapsed_s < self.window_s

    def delay_s(self, failures: int) -> float:
        """The wait before retrying after the ``failures``-th failure in a row."""
        return min(self.first_delay_s * 2**failures, self.max_delay_s)


#: What an SDK client's uploads and downloads retry with by default (see above).
TRANSFER_RETRY = RetryPolicy(window_s=60.0)
