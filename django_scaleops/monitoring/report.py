"""What the endpoints publish: the fleet's query figures (or this process's when Redis is off)."""

from __future__ import annotations

import logging
import time
from typing import Any

from django_scaleops import metrics
from django_scaleops.conf import conf
from django_scaleops.monitoring import aggregate
from django_scaleops.monitoring.monitor import monitor, unmonitored
from django_scaleops.monitoring.stats import QueryStats

logger = logging.getLogger("django_scaleops.monitoring")


def current_stats() -> tuple[QueryStats, str]:
    """``(stats, scope)``: scope is ``"fleet"`` when read from Redis, ``"process"`` otherwise."""
    client = aggregate.redis_client()
    if client is not None:
        try:
            monitor.flush()
            return aggregate.read(client, conf.SCALEOPS_MONITOR_REDIS_PREFIX), "fleet"
        except Exception as exc:
            logger.warning("query monitor: Redis unreachable (%s); reporting this process only", type(exc).__name__)
    return monitor.snapshot(), "process"


def query_report(stats: QueryStats | None = None, scope: str = "process") -> dict[str, Any]:
    if stats is None:
        stats, scope = current_stats()
    now = time.time()
    return {
        "scope": scope,
        "generated_at": now,
        "slow_query_ms": conf.SCALEOPS_MONITOR_SLOW_QUERY_MS,
        **stats.to_report(
            now=now,
            window=conf.SCALEOPS_MONITOR_HEALTH_WINDOW,
            min_sample=conf.SCALEOPS_MONITOR_HEALTH_MIN_SAMPLE,
            degraded=conf.SCALEOPS_MONITOR_DEGRADED_SHARE,
            unhealthy=conf.SCALEOPS_MONITOR_UNHEALTHY_SHARE,
        ),
        "sources": _sources(),
    }


def _sources() -> dict[str, Any]:
    # Sources may query the database (partition sizes, ...): that is not the application's load.
    with unmonitored():
        return metrics.collect()
