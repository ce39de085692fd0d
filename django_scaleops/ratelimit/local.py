"""The in-process limiter of tiers in ``local`` mode while Redis is down."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from django_scaleops.conf import conf
from django_scaleops.ratelimit.decision import Decision
from django_scaleops.ratelimit.policy import FAIL_LOCAL, Policy


class LocalLimiter:
    """The same bucket arithmetic in process memory, for tiers in ``local`` mode while Redis is down."""

    def __init__(self, max_buckets: int = 100_000) -> None:
        self._lock = threading.Lock()
        # Least recently used first: when full, the oldest bucket goes, so a flood of new
        # callers (addresses) while Redis is down cannot empty the buckets of everyone else.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max_buckets = max_buckets

    def check(self, identity: str, policy: Policy, cost: int = 1) -> Decision:
        instances = max(1, int(conf.SCALEOPS_THROTTLE_LOCAL_INSTANCES))
        limit = max(1.0, policy.limit / instances)
        capacity = max(1.0, policy.capacity / instances)
        rate = limit / policy.period  # requests drained per second
        now = time.monotonic()
        with self._lock:
            used, last = self._buckets.get(identity, (0.0, now))
            used = max(0.0, used - (now - last) * rate)
            allowed = used + cost <= capacity
            if allowed:
                used += cost
            self._buckets[identity] = (used, now)
            self._buckets.move_to_end(identity)
            if len(self._buckets) > self._max_buckets:
                self._buckets.popitem(last=False)
        retry = 0.0 if allowed else (used + cost - capacity) / rate
        return Decision(
            allowed=allowed,
            policy=policy,
            remaining=int(capacity - used),
            retry_after=retry,
            reset_after=used / rate,
            degraded=FAIL_LOCAL,
        )

    def forget(self, key: str) -> None:
        with self._lock:
            self._buckets.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()
