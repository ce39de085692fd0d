"""Summing the figures of every worker process in Redis.

Each process sends what it counted since its last flush (bucket counts with ``HINCRBY``, so two
workers' histograms add up exactly as one would), and readers sum nothing themselves: they read
the fleet's histograms back. Keys, under ``SCALEOPS_MONITOR_REDIS_PREFIX``:

- ``<p>:aliases`` (set) and ``<p>:alias:<alias>`` (hash: ``n``, ``sum``, ``slow``, ``b<bucket>``)
- ``<p>:fps`` (hash fingerprint -> statement) and ``<p>:fp:<fingerprint>`` (hash as above)
- ``<p>:win:<unix second>`` (hash: ``n``, ``slow``), expiring after twice the health window
- ``<p>:n_plus_one`` (counter)
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from django_scaleops.conf import conf
from django_scaleops.monitoring.histogram import LogHistogram
from django_scaleops.monitoring.stats import QueryStats
from django_scaleops.redis_cluster.client import slot_prefix


class Flushable(Protocol):
    """What ``flush`` needs of the query monitor (which calls it: no import back)."""

    def take_unflushed(self) -> tuple[QueryStats, QueryStats]: ...

    def mark_flushed(self, current: QueryStats) -> None: ...


logger = logging.getLogger("django_scaleops.monitoring")

RETENTION_SECONDS = 7 * 24 * 3600  # keys of a fleet that stopped reporting go away on their own


def redis_client() -> Any | None:
    """The Redis client of ``SCALEOPS_MONITOR_CACHE_ALIAS``, or None when aggregation is off."""
    alias = conf.SCALEOPS_MONITOR_CACHE_ALIAS
    if not alias:
        return None
    from django_redis import get_redis_connection

    return get_redis_connection(alias)


def flush(monitor: Flushable) -> bool:
    """Send ``monitor``'s figures since its last flush; on failure they are sent by the next one."""
    client = redis_client()
    if client is None:
        return False
    current, delta = monitor.take_unflushed()
    try:
        push(client, conf.SCALEOPS_MONITOR_REDIS_PREFIX, delta)
    except Exception as exc:
        logger.warning("query monitor: could not flush to Redis (%s); will retry", type(exc).__name__)
        return False
    monitor.mark_flushed(current)
    return True


def push(client: Any, prefix: str, delta: QueryStats) -> None:
    prefix = slot_prefix(client, prefix)  # Redis Cluster: one slot, so the pipeline is not split
    pipe = client.pipeline(transaction=False)
    for alias, hist in delta.aliases.items():
        if hist.count:
            pipe.sadd(f"{prefix}:aliases", alias)
            _push_histogram(pipe, f"{prefix}:alias:{alias}", hist, delta.alias_slow.get(alias, 0))
    if delta.fingerprint_text:
        pipe.hset(f"{prefix}:fps", mapping=delta.fingerprint_text)
    for fingerprint, hist in delta.fingerprints.items():
        if hist.count:
            _push_histogram(pipe, f"{prefix}:fp:{fingerprint}", hist, delta.fingerprint_slow.get(fingerprint, 0))
    window_ttl = 2 * max(conf.SCALEOPS_MONITOR_HEALTH_WINDOW, 60)
    for second, (total, slow) in delta.window.items():
        key = f"{prefix}:win:{second}"
        pipe.hincrby(key, "n", total)
        if slow:
            pipe.hincrby(key, "slow", slow)
        pipe.expire(key, window_ttl)
    if delta.n_plus_one:
        pipe.incrby(f"{prefix}:n_plus_one", delta.n_plus_one)
    for key in (f"{prefix}:aliases", f"{prefix}:fps", f"{prefix}:n_plus_one"):
        pipe.expire(key, RETENTION_SECONDS)
    pipe.execute()


def _push_histogram(pipe: Any, key: str, hist: LogHistogram, slow: int) -> None:
    pipe.hincrby(key, "n", hist.count)
    pipe.hincrbyfloat(key, "sum", hist.total)
    if slow:
        pipe.hincrby(key, "slow", slow)
    for index, count in hist.buckets.items():
        pipe.hincrby(key, f"b{index}", count)
    pipe.expire(key, RETENTION_SECONDS)


def read(client: Any, prefix: str, *, now: float | None = None, max_fingerprints: int | None = None) -> QueryStats:
    """The fleet's figures. Fingerprints are capped (most executed first) so the bound holds fleet-wide."""
    now = time.time() if now is None else now
    prefix = slot_prefix(client, prefix)
    window = 2 * max(conf.SCALEOPS_MONITOR_HEALTH_WINDOW, 60)
    limit = conf.SCALEOPS_MONITOR_MAX_FINGERPRINTS if max_fingerprints is None else max_fingerprints
    aliases = sorted(_text(a) for a in client.smembers(f"{prefix}:aliases"))
    texts = {_text(k): _text(v) for k, v in client.hgetall(f"{prefix}:fps").items()}
    seconds = [int(now) - offset for offset in range(window)]
    pipe = client.pipeline(transaction=False)
    for alias in aliases:
        pipe.hgetall(f"{prefix}:alias:{alias}")
    fingerprints = sorted(texts)
    for fingerprint in fingerprints:
        pipe.hgetall(f"{prefix}:fp:{fingerprint}")
    for second in seconds:
        pipe.hgetall(f"{prefix}:win:{second}")
    pipe.get(f"{prefix}:n_plus_one")
    replies = iter(pipe.execute())

    stats = QueryStats()
    for alias in aliases:
        stats.aliases[alias], stats.alias_slow[alias] = _histogram(next(replies))
    found: list[tuple[str, LogHistogram, int]] = []
    for fingerprint in fingerprints:
        hist, slow = _histogram(next(replies))
        if hist.count:
            found.append((fingerprint, hist, slow))
    found.sort(key=lambda item: item[1].count, reverse=True)
    for fingerprint, hist, slow in found[:limit]:
        stats.fingerprints[fingerprint] = hist
        stats.fingerprint_slow[fingerprint] = slow
        stats.fingerprint_text[fingerprint] = texts[fingerprint]
    for second in seconds:
        counts = next(replies)
        if counts:
            fields = {_text(k): int(v) for k, v in counts.items()}
            stats.window[second] = [fields.get("n", 0), fields.get("slow", 0)]
    stats.n_plus_one = int(next(replies) or 0)
    return stats


def _histogram(fields: dict[Any, Any]) -> tuple[LogHistogram, int]:
    decoded = {_text(k): v for k, v in fields.items()}
    buckets = {int(name[1:]): int(value) for name, value in decoded.items() if name.startswith("b")}
    hist = LogHistogram.from_buckets(buckets, float(decoded.get("sum", 0)))
    return hist, int(decoded.get("slow", 0))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def clear(client: Any, prefix: str) -> int:
    """Delete every key of ``prefix`` (tests, and a fresh start); returns how many."""
    prefix = slot_prefix(client, prefix)  # Redis Cluster: one slot, so the pipeline is not split
    keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
    return int(client.delete(*keys)) if keys else 0
