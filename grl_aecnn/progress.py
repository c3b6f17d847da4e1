"""Progress lines for logs without a terminal (a Ray Job's log, CI), where bars are disabled.

One line per step (trial step, PPO iteration), at most one every ``interval_s`` seconds so a
fast loop does not flood the log; the last step is always printed.
"""

from __future__ import annotations

import sys
import time


class LogLines:
    """Rate-limited ``print`` of progress lines; silent when stderr is a terminal (a bar shows)."""

    def __init__(self, interval_s: float = 5.0) -> None:
        self.interval_s = interval_s
        self.enabled = not sys.stderr.isatty()
        self._last = float("-inf")

    def __call__(self, line: str, final: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (final or now - self._last >= self.interval_s):
            print(line, flush=True)
            self._last = now
