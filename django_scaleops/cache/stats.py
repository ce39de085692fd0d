"""In-process cache statistics per key prefix, published through ``django_scaleops.metrics``.

Counting is a dict update under a lock (no Redis round trip), so it costs nothing on the hot path.
Every ``SCALEOPS_CACHE_STATS_FLUSH_INTERVAL`` the deltas are flushed to Redis in one pipeline
(``cache.cluster``), which gives figures summed over every process.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

COUNTERS = (
    "hits",
    "l1_hits",
    "misses",
    "stale_served",
    "stampedes_avoided",
    "early_refreshes",
    "lease_timeouts",
    "voided_sets",
    "bypassed",
    "redis_errors",
    "rejected",  # values without a valid signature (SCALEOPS_CACHE_SIGNING_KEY)
    "fetches",
)

MAX_PREFIXES = 200  # beyond this, figures go to "_other": prefixes come from user keys
_lock = threading.Lock()
_by_prefix: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys((*COUNTERS, "fetch_seconds"), 0.0))
_state: dict[str, Any] = {"redis_available": True, "outages": 0, "invalidations": 0}
_flushed: dict[str, dict[str, float]] = {}
# Invalidations belong to tables, not to key prefixes: counted apart (stamps bumped after commit).
_unflushed_invalidations = 0


def _bounded(prefix: str) -> str:
    return prefix if prefix in _by_prefix or len(_by_prefix) < MAX_PREFIXES else "_other"


def incr(prefix: str, counter: str, amount: float = 1) -> None:
    with _lock:
        _by_prefix[_bounded(prefix)][counter] += amount


def record_fetch(prefix: str, seconds: float) -> None:
    with _lock:
        figures = _by_prefix[_bounded(prefix)]
        figures["fetches"] += 1
        figures["fetch_seconds"] += seconds


def count_invalidations(stamps: int) -> None:
    """``stamps`` table stamps bumped (one per table written, and each table it cascades to)."""
    global _unflushed_invalidations
    with _lock:
        _state["invalidations"] += stamps
        _unflushed_invalidations += stamps


def take_invalidations() -> int:
    """Invalidations counted since the last call (for the flush to Redis)."""
    global _unflushed_invalidations
    with _lock:
        taken, _unflushed_invalidations = _unflushed_invalidations, 0
    return taken


def give_back_invalidations(count: int) -> None:
    global _unflushed_invalidations
    with _lock:
        _unflushed_invalidations += count


def set_redis_available(available: bool) -> None:
    with _lock:
        if _state["redis_available"] and not available:
            _state["outages"] += 1
        _state["redis_available"] = available


def snapshot() -> dict[str, Any]:
    """Totals and per-prefix figures (counts as ints, fetch time in seconds and per fetch)."""
    with _lock:
        prefixes = {name: dict(figures) for name, figures in _by_prefix.items()}
        state = dict(_state)
    totals = dict.fromkeys((*COUNTERS, "fetch_seconds"), 0.0)
    for figures in prefixes.values():
        for name, value in figures.items():
            totals[name] += value
    return {
        **state,
        "totals": _shape(totals),
        "prefixes": {name: _shape(figures) for name, figures in sorted(prefixes.items())},
    }


def take_deltas() -> dict[str, dict[str, float]]:
    """What changed since the last call, per prefix (for the flush to Redis)."""
    deltas: dict[str, dict[str, float]] = {}
    with _lock:
        for prefix, figures in _by_prefix.items():
            before = _flushed.get(prefix, {})
            changed = {name: value - before.get(name, 0.0) for name, value in figures.items()}
            changed = {name: value for name, value in changed.items() if value}
            if changed:
                deltas[prefix] = changed
                _flushed[prefix] = dict(figures)
    return deltas


def give_back(deltas: dict[str, dict[str, float]]) -> None:
    """A flush failed: count these deltas again at the next one."""
    with _lock:
        for prefix, changed in deltas.items():
            before = _flushed.setdefault(prefix, {})
            for name, value in changed.items():
                before[name] = before.get(name, 0.0) - value


def reset() -> None:
    global _unflushed_invalidations
    with _lock:
        _flushed.clear()
        _by_prefix.clear()
        _state.update(redis_available=True, outages=0, invalidations=0)
        _unflushed_invalidations = 0


def shape(figures: dict[str, float]) -> dict[str, float | int]:
    return _shape({**dict.fromkeys((*COUNTERS, "fetch_seconds"), 0.0), **figures})


def _shape(figures: dict[str, float]) -> dict[str, float | int]:
    shaped: dict[str, float | int] = {name: int(figures[name]) for name in COUNTERS}
    shaped["fetch_seconds"] = round(figures["fetch_seconds"], 6)
    fetches = figures["fetches"]
    shaped["fetch_seconds_avg"] = round(figures["fetch_seconds"] / fetches, 6) if fetches else 0.0
    lookups = figures["hits"] + figures["l1_hits"] + figures["misses"] + figures["stale_served"]
    shaped["hit_ratio"] = round((figures["hits"] + figures["l1_hits"]) / lookups, 4) if lookups else 0.0
    return shaped
