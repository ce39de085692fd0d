"""The router's figures as Prometheus families (``/metrics``): replica states, lag, reads.

Like the ``replicas`` JSON source, these are this process's view (each process checks its
replicas and counts its own reads).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from django_scaleops.metrics import number
from django_scaleops.replicas.health import DOWN, HEALTHY, LAGGING, RECOVERING

STATES = (HEALTHY, LAGGING, RECOVERING, DOWN)


def prometheus_families(figures: Mapping[str, Any]) -> Iterator[Metric]:
    configured = bool(figures.get("configured"))
    yield GaugeMetricFamily(
        "scaleops_router_configured", "1 when PrimaryReplicaRouter is in DATABASE_ROUTERS.", int(configured)
    )
    if not configured:
        return
    replicas: Mapping[str, Mapping[str, Any]] = figures.get("replicas") or {}
    primary = str(figures.get("primary", ""))
    state = GaugeMetricFamily(
        "scaleops_replica_state", "1 for the replica's current state, 0 for the others.", labels=["alias", "state"]
    )
    lag_seconds = GaugeMetricFamily(
        "scaleops_replica_lag_seconds", "Replay lag of the replica at its last check.", labels=["alias"]
    )
    lag_bytes = GaugeMetricFamily(
        "scaleops_replica_lag_bytes", "WAL the replica had not replayed at its last check.", labels=["alias"]
    )
    weight = GaugeMetricFamily(
        "scaleops_replica_weight", "The replica's share of reads (SCALEOPS_ROUTER_REPLICA_WEIGHTS).", labels=["alias"]
    )
    last_check = GaugeMetricFamily(
        "scaleops_replica_last_check_timestamp_seconds", "When the replica was last checked.", labels=["alias"]
    )
    reads = CounterMetricFamily(
        "scaleops_router_reads",
        "Reads routed, by the alias that served them and the route: replica, primary (sent to the primary)"
        " or failover (retried on the primary after a replica failed).",
        labels=["alias", "route"],
    )
    failovers = CounterMetricFamily(
        "scaleops_replica_failovers", "Reads on the replica that failed and were retried elsewhere.", labels=["alias"]
    )
    conflicts = CounterMetricFamily(
        "scaleops_replica_conflicts", "Reads the replica cancelled for a recovery conflict.", labels=["alias"]
    )
    for alias, values in sorted(replicas.items()):
        for name in STATES:
            state.add_metric([alias, name], int(values.get("state") == name))
        for family, key in (
            (lag_seconds, "lag_seconds"),
            (lag_bytes, "lag_bytes"),
            (last_check, "last_check"),
            (weight, "weight"),
        ):
            value = number(values.get(key))
            if value is not None:
                family.add_metric([alias], value)
        reads.add_metric([alias, "replica"], number(values.get("reads")) or 0.0)
        failovers.add_metric([alias], number(values.get("failovers")) or 0.0)
        conflicts.add_metric([alias], number(values.get("conflicts")) or 0.0)
    reads.add_metric([primary, "primary"], number(figures.get("primary_reads")) or 0.0)
    reads.add_metric([primary, "failover"], number(figures.get("failover_reads")) or 0.0)
    yield from (state, lag_seconds, lag_bytes, weight, last_check, reads, failovers, conflicts)
    yield GaugeMetricFamily(
        "scaleops_replicas_degraded", "1 when a replica is not healthy.", int(bool(figures.get("degraded")))
    )
    yield GaugeMetricFamily(
        "scaleops_replicas_all_down",
        "1 when replicas are configured and none is healthy (reads go to the primary).",
        int(bool(figures.get("all_replicas_down"))),
    )
