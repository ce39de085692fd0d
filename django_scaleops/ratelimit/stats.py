"""The limiter's per-process counters."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class Stats:
    """Per-process counters, published through ``django_scaleops.metrics``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def incr(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.counts)


stats = Stats()
