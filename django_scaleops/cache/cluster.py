"""Cache statistics summed over every process: deltas flushed to Redis hashes in one pipeline."""

from __future__ import annotations

import threading
import time
from typing import Any

from django_scaleops.cache import stats
from django_scaleops.cache.backend import RedisUnavailable, gate
from django_scaleops.conf import conf

_lock = threading.Lock()
_last_flush = 0.0


def _key(name: str) -> str:
    # On a Redis Cluster (the Redis kind, unrelated to this module's fleet of processes) every
    # statistics key shares one hash slot, so a flush is one pipeline to one node: it succeeds or
    # fails whole, and deltas given back after a failure are never counted twice.
    return gate.slot_key("stats", name)


def maybe_flush() -> None:
    """Flush the deltas when the interval has passed (one cheap clock read otherwise)."""
    global _last_flush
    interval = float(conf.SCALEOPS_CACHE_STATS_FLUSH_INTERVAL)
    if interval <= 0 or time.monotonic() - _last_flush < interval:
        return
    with _lock:
        if time.monotonic() - _last_flush < interval:
            return
        _last_flush = time.monotonic()
    flush()


def flush() -> None:
    deltas = stats.take_deltas()
    invalidations = stats.take_invalidations()
    if not deltas and not invalidations:
        return

    def run(client: Any) -> None:
        pipe = client.pipeline(transaction=False)
        for prefix, changed in deltas.items():
            key = _key(f"stats:{prefix}")
            for name, value in changed.items():
                pipe.hincrbyfloat(key, name, value)
            pipe.sadd(_key("stats:prefixes"), prefix)
        if invalidations:
            pipe.incrby(_key("stats:invalidations"), invalidations)
        pipe.execute()

    try:
        gate.call(run)
    except RedisUnavailable:
        stats.give_back(deltas)
        stats.give_back_invalidations(invalidations)


def snapshot() -> dict[str, Any]:
    """Figures per prefix and in total, summed over every process that flushed to this Redis."""

    def run(client: Any) -> tuple[dict[str, dict[str, float]], int]:
        prefixes = sorted(p.decode() for p in client.smembers(_key("stats:prefixes")))
        pipe = client.pipeline(transaction=False)
        for prefix in prefixes:
            pipe.hgetall(_key(f"stats:{prefix}"))
        pipe.get(_key("stats:invalidations"))
        *replies, invalidations = pipe.execute()
        by_prefix = {
            prefix: {k.decode(): float(v) for k, v in figures.items()}
            for prefix, figures in zip(prefixes, replies, strict=True)
        }
        return by_prefix, int(invalidations or 0)

    by_prefix, invalidations = gate.call(run)
    totals: dict[str, float] = {}
    for figures in by_prefix.values():
        for name, value in figures.items():
            totals[name] = totals.get(name, 0.0) + value
    return {
        "totals": stats.shape(totals),
        "prefixes": {prefix: stats.shape(figures) for prefix, figures in by_prefix.items()},
        "invalidations": invalidations,
    }


def metrics_source() -> dict[str, Any]:
    """This process's figures, plus the cluster's when flushing is on (never raises)."""
    figures = stats.snapshot()
    if float(conf.SCALEOPS_CACHE_STATS_FLUSH_INTERVAL) > 0:
        flush()
        try:
            figures["cluster"] = snapshot()
        except RedisUnavailable:
            figures["cluster"] = {"error": "redis unavailable"}
    return figures


def reset() -> None:
    """Forget the cluster figures (all processes) and this process's unflushed deltas."""

    def run(client: Any) -> None:
        prefixes = client.smembers(_key("stats:prefixes"))
        keys = [_key(f"stats:{p.decode()}") for p in prefixes]
        client.delete(_key("stats:prefixes"), _key("stats:invalidations"), *keys)

    stats.take_deltas()
    stats.take_invalidations()
    gate.call(run)
