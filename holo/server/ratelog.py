"""Rate-limited log lines: what a caller can trigger at will is logged a few times a minute.

Anyone who reaches the port can make ~1,800 failing calls a second; a log line per call
(the 686-byte traceback grpc logged for each undecodable request) was ~4.4 GB an hour,
enough to fill the disk the store needs. Every line a request can cause goes through a
:class:`RateLimitedLog`: per key (a kind of event, not a caller-chosen string), the first
``burst`` lines of an interval are written, the rest are counted and reported with the
next line written for that key ("N similar messages suppressed").
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["RateLimitedLog"]


@dataclass
class _Window:
    started: float
    written: int = 0
    suppressed: int = 0


class RateLimitedLog:
    """A logger's lines, at most ``burst`` per ``interval_s`` for each key.

    Parameters
    ----------
    logger
        Where the lines go.
    burst
        Lines written per key and interval; 5 lines a minute show a problem without
        letting a flood of calls fill the disk (at most 7,200 lines a day per key).
    interval_s
        The interval, in seconds.
    max_keys
        Keys remembered (least recently used forgotten first): keys are kinds of event
        and method names, a few hundred at most, so the bound only guards against a
        caller-influenced key by mistake.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 5,
        interval_s: float = 60.0,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.interval_s = interval_s
        self.max_keys = max_keys
        self._clock = clock
        self._windows: OrderedDict[Hashable, _Window] = OrderedDict()

    def log(
        self, level: int, key: Hashable, msg: str, *args: object, exc_info: bool = False
    ) -> bool:
        """Log ``msg % args`` at ``level`` unless ``key`` used up its lines of this interval.

        Returns True when the line was written. A suppressed count is reported on the next
        line written for the key (with the interval it covers), not on a timer: nothing
        runs while no one calls.
        """
        if not self.logger.isEnabledFor(level):
            return False
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window.started >= self.interval_s:
            suppressed = 0 if window is None else window.suppressed
            window = _Window(now)
            window.suppressed = -suppressed  # reported below, then reset
            self._windows[key] = window
            while len(self._windows) > self.max_keys:
                self._windows.popitem(last=False)
        self._windows.move_to_end(key)
        if window.written >= self.burst:
            window.suppressed += 1
            return False
        window.written += 1
        if window.suppressed < 0:
            msg += f" ({-window.suppressed} similar messages suppressed before this one)"
            window.suppressed = 0
        elif window.written == self.burst:
            msg += f" (further similar messages suppressed for {self.interval_s:.0f} s)"
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True
