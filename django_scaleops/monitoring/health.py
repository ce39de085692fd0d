"""Query health from the slow share, and the readiness probes of ``/health/``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connections

from django_scaleops.conf import conf

HEALTHY, DEGRADED, UNHEALTHY, UNKNOWN = "healthy", "degraded", "unhealthy", "unknown"


def classify(queries: int, slow: int, *, min_sample: int, degraded: float, unhealthy: float) -> str:
    """``healthy`` below ``degraded``, ``degraded`` from it up to ``unhealthy`` inclusive, then
    ``unhealthy``; ``unknown`` while the window holds fewer than ``min_sample`` queries."""
    if queries <= 0 or queries < min_sample:
        return UNKNOWN
    share = slow / queries
    if share < degraded:
        return HEALTHY
    if share <= unhealthy:
        return DEGRADED
    return UNHEALTHY


# Probes other capabilities add (replica lag, PgBouncer pools): name -> (probe, critical).
# A probe returns a JSON-serialisable dict with at least {"ok": bool}, or raises.
HealthProbe = Callable[[], dict[str, Any]]
_probes: dict[str, tuple[HealthProbe, bool]] = {}


def register_probe(name: str, probe: HealthProbe, *, critical: bool = False) -> None:
    """Add a readiness probe; a failing critical probe makes readiness fail (503)."""
    _probes[name] = (probe, critical)


def unregister_probe(name: str) -> None:
    _probes.pop(name, None)


def _timed(probe: HealthProbe) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = dict(probe())
    except Exception as exc:  # report the type only: messages can carry hosts and credentials
        result = {"ok": False, "error": type(exc).__name__}
    result["ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


def _database_probe(alias: str) -> HealthProbe:
    def probe() -> dict[str, Any]:
        connection = connections[alias]
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_is_in_recovery()" if connection.vendor == "postgresql" else "SELECT 1")
            row = cursor.fetchone()
        result: dict[str, Any] = {"ok": True}
        if connection.vendor == "postgresql" and row is not None:
            result["role"] = "replica" if row[0] else "primary"
        return result

    return probe


def _close_if_broken(alias: str) -> None:
    # A probe that failed leaves a dead connection behind; drop it so the next probe reconnects.
    connection = connections[alias]
    if connection.connection is not None and not connection.is_usable():
        connection.close()


def _redis_probe(alias: str) -> HealthProbe:
    def probe() -> dict[str, Any]:
        from django_redis import get_redis_connection

        return {"ok": bool(get_redis_connection(alias).ping())}

    return probe


def readiness() -> dict[str, Any]:
    """Every configured dependency's state and whether the service can take traffic."""
    aliases = conf.SCALEOPS_MONITOR_HEALTH_DATABASES
    if aliases is None:
        aliases = list(settings.DATABASES)
    critical = set(conf.SCALEOPS_MONITOR_HEALTH_CRITICAL)
    checks: dict[str, dict[str, Any]] = {}
    failed_critical = failed_other = False
    for alias in aliases:
        result = _timed(_database_probe(alias))
        if not result["ok"]:
            _close_if_broken(alias)
        checks[f"database:{alias}"] = result
        if not result["ok"]:
            failed_critical |= alias in critical
            failed_other |= alias not in critical
    for alias, cache in settings.CACHES.items():
        if cache.get("BACKEND", "").startswith("django_redis."):
            result = _timed(_redis_probe(alias))
            checks[f"redis:{alias}"] = result
            if not result["ok"]:
                # The monitor's own cache carries the fleet figures but not the traffic.
                failed_other = True
    for name, (probe, is_critical) in sorted(_probes.items()):
        result = _timed(probe)
        checks[name] = result
        if not result.get("ok"):
            failed_critical |= is_critical
            failed_other |= not is_critical
    status = "down" if failed_critical else ("degraded" if failed_other else "ok")
    return {"status": status, "ready": not failed_critical, "checks": checks}
