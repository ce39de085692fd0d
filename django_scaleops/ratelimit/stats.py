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
        # The same counts per (tier or path policy name, counter), for /metrics; not in the JSON.
        self.by_tier: Counter[tuple[str, str]] = Counter()

    def incr(self, name: str, *, tier: str | None = None) -> None:
        with self._lock:
            self.counts[name] += 1
            if tier is not None:
                self.by_tier[(tier, name)] += 1

    def tier_snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self.by_tier)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.counts)


stats = Stats()
