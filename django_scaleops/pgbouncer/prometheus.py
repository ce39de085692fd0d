"""PgBouncer's figures as Prometheus families (``/metrics``): per alias, pool and database.

``alias`` is the Django alias that declares the PgBouncer; a pool is a ``database`` + ``user``
pair. Times are converted from PgBouncer's microseconds to seconds, traffic is in bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from django_scaleops.metrics import number

POOL = ["alias", "database", "user"]
CLIENT_STATES = {"cl_active": "active", "cl_waiting": "waiting"}
SERVER_STATES = {"sv_active": "active", "sv_idle": "idle", "sv_used": "used", "sv_login": "login"}
# SHOW STATS totals: column -> (family, help, divisor to the base unit).
STATS = {
    "total_xact_count": ("scaleops_pgbouncer_transactions", "Transactions pooled.", 1.0),
    "total_query_count": ("scaleops_pgbouncer_queries", "Queries pooled.", 1.0),
    "total_received": ("scaleops_pgbouncer_received_bytes", "Network traffic received from clients.", 1.0),
    "total_sent": ("scaleops_pgbouncer_sent_bytes", "Network traffic sent to clients.", 1.0),
    "total_xact_time": (
        "scaleops_pgbouncer_transaction_seconds",
        "Time spent connected to PostgreSQL in a transaction.",
        1e6,
    ),
    "total_query_time": ("scaleops_pgbouncer_query_seconds", "Time spent by PostgreSQL on queries.", 1e6),
    "total_wait_time": ("scaleops_pgbouncer_client_wait_seconds", "Time clients waited for a server.", 1e6),
    "total_server_assignment_count": (
        "scaleops_pgbouncer_server_assignments",
        "Times a server connection was assigned to a client.",
        1.0,
    ),
}


def prometheus_families(figures: Mapping[str, Any]) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "scaleops_pgbouncer_up", "1 when the PgBouncer admin console answered, 0 when not.", labels=["alias"]
    )
    info = GaugeMetricFamily("scaleops_pgbouncer_info", "PgBouncer's version (always 1).", labels=["alias", "version"])
    pool_size = GaugeMetricFamily("scaleops_pgbouncer_pool_size", "Server connections a pool may open.", labels=POOL)
    pool_mode = GaugeMetricFamily("scaleops_pgbouncer_pool_mode", "The pool's mode (always 1).", labels=[*POOL, "mode"])
    clients = GaugeMetricFamily(
        "scaleops_pgbouncer_client_connections",
        "Client connections by state: active (linked to a server or idle) or waiting for a server.",
        labels=[*POOL, "state"],
    )
    servers = GaugeMetricFamily(
        "scaleops_pgbouncer_server_connections",
        "Server connections by state: active (linked to a client), idle, used (to be checked), login.",
        labels=[*POOL, "state"],
    )
    max_wait = GaugeMetricFamily(
        "scaleops_pgbouncer_max_wait_seconds", "How long the oldest waiting client has waited.", labels=POOL
    )
    totals = {
        column: (CounterMetricFamily(name, text, labels=["alias", "database"]), divisor)
        for column, (name, text, divisor) in STATS.items()
    }
    for alias, values in sorted(figures.items()):
        if not isinstance(values, Mapping):
            continue
        reachable = bool(values.get("reachable"))
        up.add_metric([alias], int(reachable))
        if not reachable:
            continue
        if values.get("version"):
            info.add_metric([alias, str(values["version"])], 1)
        for pool in values.get("pools") or []:
            labels = [alias, str(pool.get("database", "")), str(pool.get("user", ""))]
            pool_size.add_metric(labels, number(pool.get("pool_size")) or 0.0)
            if pool.get("pool_mode"):
                pool_mode.add_metric([*labels, str(pool["pool_mode"])], 1)
            for key, state in CLIENT_STATES.items():
                clients.add_metric([*labels, state], number(pool.get(key)) or 0.0)
            for key, state in SERVER_STATES.items():
                servers.add_metric([*labels, state], number(pool.get(key)) or 0.0)
            max_wait.add_metric(labels, (number(pool.get("maxwait_ms")) or 0.0) / 1000)
        for database, columns in sorted((values.get("stats") or {}).items()):
            for column, (family, divisor) in totals.items():
                value = number(columns.get(column))
                if value is not None:
                    family.add_metric([alias, database], value / divisor)
    yield from (up, info, pool_size, pool_mode, clients, servers, max_wait)
    yield from (family for family, _ in totals.values())
