"""Progress in a redirected log: a line every few seconds where no progress bar is drawn."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger("gradsum.progress")


@dataclass
class Heartbeat:
    """Counts work done and logs `what: done/total unit (rate/s)` at most every `every` seconds."""

    what: str
    total: int
    unit: str = "images"
    every: float = 5.0
    done: int = 0
    _start: float = field(default_factory=time.perf_counter)
    _last: float = field(default_factory=time.perf_counter)

    def add(self, n: int = 1) -> None:
        """Count `n` more items, logging when `every` seconds have passed since the last line."""
        self.done += n
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            rate = self.done / max(now - self._start, 1e-9)
            log.info("%s: %d/%d %s (%.1f/s)", self.what, self.done, self.total, self.unit, rate)
