"""PgBouncer: pool sizing, config generation, live pool metrics and health, checks, fork safety.

See docs/pgbouncer.md.
"""

from __future__ import annotations

from django_scaleops.pgbouncer.aliases import PgBouncerError, PooledAlias, pooled_alias, pooled_aliases
from django_scaleops.pgbouncer.health import (
    ConnectionLeak,
    Finding,
    PoolHealth,
    find_connection_leaks,
    validate_pool_health,
)
from django_scaleops.pgbouncer.metrics import PoolFigures, PoolMetrics, get_pool_metrics
from django_scaleops.pgbouncer.sizing import PoolRecommendation, calculate_pool_size

__all__ = [
    "ConnectionLeak",
    "Finding",
    "PgBouncerError",
    "PoolFigures",
    "PoolHealth",
    "PoolMetrics",
    "PoolRecommendation",
    "PooledAlias",
    "calculate_pool_size",
    "find_connection_leaks",
    "get_pool_metrics",
    "pooled_alias",
    "pooled_aliases",
    "validate_pool_health",
]
