"""The cache's figures as Prometheus families (``/metrics``), per key prefix.

The cluster's figures (summed over every process in Redis) are published when flushing is on and
Redis answered; otherwise this process's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from django_scaleops.metrics import number

# Lookup outcomes: hit rate per prefix = results hit + l1_hit over all results.
LOOKUPS = {"hits": "hit", "l1_hits": "l1_hit", "misses": "miss", "stale_served": "stale"}
COUNTERS = {
    "stampedes_avoided": ("scaleops_cache_stampedes_avoided", "Lookups that waited for another caller's fill."),
    "early_refreshes": ("scaleops_cache_early_refreshes", "Entries refreshed before expiry (XFetch)."),
    "lease_timeouts": ("scaleops_cache_lease_timeouts", "Waits for a fill lease that timed out."),
    "voided_sets": ("scaleops_cache_voided_sets", "Fills not stored because a write invalidated them meanwhile."),
    "bypassed": ("scaleops_cache_bypassed", "Lookups answered from the source without the cache (Redis down)."),
    "redis_errors": ("scaleops_cache_redis_errors", "Cache operations that failed on Redis."),
    "rejected": ("scaleops_cache_rejected_values", "Cached values refused for a missing or wrong signature."),
    "fetches": ("scaleops_cache_fetches", "Fills from the database (or the cached function)."),
}


def prometheus_families(figures: Mapping[str, Any]) -> Iterator[Metric]:
    cluster = figures.get("cluster")
    fleet = isinstance(cluster, Mapping) and isinstance(cluster.get("prefixes"), Mapping)
    chosen: Mapping[str, Any] = cluster if isinstance(cluster, Mapping) and fleet else figures
    prefixes: Mapping[str, Mapping[str, Any]] = chosen.get("prefixes") or {}
    lookups = CounterMetricFamily(
        "scaleops_cache_lookups",
        "Cache lookups by key prefix and result (hit: Redis, l1_hit: in-process, miss, stale: served stale).",
        labels=["prefix", "result"],
    )
    counters = {name: CounterMetricFamily(metric, text, labels=["prefix"]) for name, (metric, text) in COUNTERS.items()}
    fetch_time = CounterMetricFamily(
        "scaleops_cache_fetch_seconds", "Time spent filling the cache from the source.", labels=["prefix"]
    )
    for prefix, values in sorted(prefixes.items()):
        for key, result in LOOKUPS.items():
            lookups.add_metric([prefix, result], number(values.get(key)) or 0.0)
        for key, family in counters.items():
            family.add_metric([prefix], number(values.get(key)) or 0.0)
        fetch_time.add_metric([prefix], number(values.get("fetch_seconds")) or 0.0)
    yield lookups
    yield from counters.values()
    yield fetch_time
    yield GaugeMetricFamily(
        "scaleops_cache_figures_fleet",
        "1 when the cache figures are summed over every process (Redis), 0 when they are this process's.",
        int(fleet),
    )
    available = number(figures.get("redis_available"))
    if available is not None:
        yield GaugeMetricFamily(
            "scaleops_cache_redis_available", "1 while this process reaches the cache's Redis.", available
        )
    # Invalidations are per table, not per prefix: the fleet's count when there is one.
    invalidations = number(chosen.get("invalidations") if fleet else figures.get("invalidations"))
    if invalidations is not None:
        yield CounterMetricFamily(
            "scaleops_cache_invalidations",
            "Table stamps bumped after a committed write (each table written and each it cascades to).",
            invalidations,
        )
    outages = number(figures.get("outages"))
    if outages is not None:
        yield CounterMetricFamily("scaleops_cache_redis_outages", "Times this process lost the cache's Redis.", outages)
