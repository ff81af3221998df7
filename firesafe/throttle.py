"""Warnings about a recurring condition, at most one line per interval.

A flood (garbage on a socket, a broker refusing every message) must not turn
into one log line per occurrence (a 35 MB log), nor be hidden: the first
occurrence is logged at once, the ones after it are counted and summed up in
one line per interval (also after the flood stops: a timer writes the last
summary), each line saying how many it covers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

EVERY_S: Final = 10.0


class ThrottledWarning:
    def __init__(self, logger: logging.Logger, what: str, every_s: float = EVERY_S) -> None:
        self.log = logger
        self.what = what  # "bad input", "reject(s) not passed on", ...
        self.every_s = every_s
        self.total = 0  # occurrences ever
        self._since = 0  # occurrences not in a line yet
        self._last = -float("inf")  # monotonic time of the last line
        self._latest = ""
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self, detail: str, n: int = 1) -> None:
        """`n` occurrences; `detail` describes the latest."""
        self.total += n
        self._since += n
        self._latest = detail
        if time.monotonic() - self._last >= self.every_s:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            wait = self._last + self.every_s - time.monotonic()
            self._timer = loop.call_later(max(wait, 0.0), self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._since:
            return
        self._last = time.monotonic()
        if self._since == 1 and self.total == 1:
            self.log.warning("%s: %s", self.what, self._latest)
        else:
            self.log.warning(
                "%s: %d since the last such line (%d in all; at most one line per %.0f s), "
                "latest: %s",
                self.what,
                self._since,
                self.total,
                self.every_s,
                self._latest,
            )
        self._since = 0
