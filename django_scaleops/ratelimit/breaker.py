"""The circuit breaker that keeps a dead Redis from adding latency to every request."""

from __future__ import annotations

import threading
import time

from django_scaleops.conf import conf


class CircuitBreaker:
    """After a Redis error, skip Redis for a cooldown so a dead server adds no latency per request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def trip(self) -> None:
        with self._lock:
            self._open_until = time.monotonic() + float(conf.SCALEOPS_THROTTLE_BREAKER_COOLDOWN)

    def reset(self) -> None:
        with self._lock:
            self._open_until = 0.0
