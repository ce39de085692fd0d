"""Cache-aside querysets and functions on Redis (django-redis): leases, XFetch, stamps, L1.

See docs/cache.md. The public API::

    from django_scaleops.cache import CachedManager, cached_function, with_cache, invalidate
"""

from __future__ import annotations

from django_scaleops.cache.core import refreshing, register_freshness_hook, unregister_freshness_hook
from django_scaleops.cache.encoding import UnkeyableValue
from django_scaleops.cache.functions import CachedFunction, cached_function, invalidate_key, with_cache
from django_scaleops.cache.invalidation import (
    broadcast_invalidate,
    cascade_invalidate,
    declare_dependency,
    invalidate,
    invalidate_all,
)
from django_scaleops.cache.querysets import CachedManager, CachedQuerySet
from django_scaleops.cache.stats import snapshot as cache_stats
from django_scaleops.cache.warmers import warmer

__all__ = [
    "CachedFunction",
    "CachedManager",
    "CachedQuerySet",
    "UnkeyableValue",
    "broadcast_invalidate",
    "cache_stats",
    "cached_function",
    "cascade_invalidate",
    "declare_dependency",
    "invalidate",
    "invalidate_all",
    "invalidate_key",
    "refreshing",
    "register_freshness_hook",
    "unregister_freshness_hook",
    "warmer",
    "with_cache",
]


def connect() -> None:
    """Wire the cache into Django (called from ``AppConfig.ready()``)."""
    from django.core.checks import register
    from django.core.signals import setting_changed

    from django_scaleops import metrics, signals
    from django_scaleops.cache import checks, cluster, invalidation, prometheus

    register(checks.check_cache)
    from django_scaleops.cache.backend import gate

    setting_changed.connect(gate.forget_keys, dispatch_uid="scaleops-cache-keys")
    from django_scaleops import wrappers

    # The write watcher, on every connection while the cache is on (innermost of the chain).
    wrappers.provide(
        "cache",
        lambda connection: invalidation.execute_wrapper if invalidation.watching() else None,
        invalidation.execute_wrapper,
    )
    signals.bulk_rows_written.connect(invalidation.on_bulk_rows_written, dispatch_uid="scaleops-cache-bulk")
    metrics.register_source("cache", cluster.metrics_source, families=prometheus.prometheus_families)
