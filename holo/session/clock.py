"""The session clock: one time base for every event, ephemeral value and video frame.

Each node anchors wall time once, then counts monotonic nanoseconds (ARCHITECTURE.md,
"Clock"): the clock never goes backwards and ignores later wall-clock steps. Nodes of one
bus agree to within their wall clocks' agreement at start (NTP keeps hospital servers
within a few ms). A replay has a clock of its own (:class:`holo.recording.replay.ReplayClock`)
that runs at its speed and jumps on a seek; both answer the :class:`Clock` protocol, which
is what ``ClockService.Sync`` reports.
"""

from __future__ import annotations

import time
from typing import Protocol

from holo.errors import InvalidRequestError

__all__ = ["MAX_AHEAD_NS", "MAX_BACKDATE_NS", "Clock", "SessionClock"]

#: How far an intent's own ``t_ns`` (or a pushed frame's capture time) may lie behind the
#: session clock: viewers that show video up to 1 s late (their jitter buffer) must already
#: hold every event of the frames they render.
MAX_BACKDATE_NS = 1_000_000_000
#: ... and ahead of it (clients' clock estimates err by a round trip at most).
MAX_AHEAD_NS = 100_000_000


class Clock(Protocol):
    """A session time base. ``rate`` session ns per real ns (0: paused); ``epoch`` changes
    whenever the clock jumps or changes rate (a client then drops its older samples)."""

    @property
    def rate(self) -> float: ...

    @property
    def epoch(self) -> int: ...

    def now_ns(self) -> int: ...


class SessionClock:
    """The live session clock of this node: wall time anchored once, then monotonic."""

    rate = 1.0
    epoch = 0

    def __init__(self) -> None:
        self._wall0 = time.time_ns()
        self._mono0 = time.monotonic_ns()

    def now_ns(self) -> int:
        return self._wall0 + (time.monotonic_ns() - self._mono0)

    def stamp(self, t_ns: int) -> int:
        """The session time of something a client says happened at ``t_ns`` (0: now).

        Raises
        ------
        InvalidRequestError
            ``t_ns`` is more than :data:`MAX_BACKDATE_NS` old or :data:`MAX_AHEAD_NS` ahead.
        """
        now = self.now_ns()
        if not t_ns:
            return now
        if not now - MAX_BACKDATE_NS <= t_ns <= now + MAX_AHEAD_NS:
            raise InvalidRequestError(
                f"t_ns {t_ns} is {(t_ns - now) / 1e6:+.0f} ms from the session clock; sync the "
                "client's clock (ClockService.Sync) or send 0 to let the server stamp it"
            )
        return t_ns
