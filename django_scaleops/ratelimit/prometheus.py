"""The limiter's figures as Prometheus families (``/metrics``): decisions per tier, refusals.

Like the ``ratelimit`` JSON source, these are this process's counts. ``tier`` is the policy's
name: the tier's for a key's bucket, the path policy's for a ``throttle_override``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, Metric

from django_scaleops.metrics import number
from django_scaleops.ratelimit.stats import stats

DECISIONS = {"allowed": "allowed", "allowed_from_lease": "allowed", "limited": "limited", "revoked": "revoked"}
SIMPLE = {
    "lookup_failed": ("scaleops_ratelimit_lookup_failures", "API-key lookups that failed (answered 503)."),
    "auth_failures": ("scaleops_ratelimit_auth_failures", "Failed API-key authentications."),
    "auth_throttled": ("scaleops_ratelimit_auth_throttled", "Requests refused after too many failed authentications."),
}


def prometheus_families(
    figures: Mapping[str, Any], tiers: Mapping[tuple[str, str], int] | None = None
) -> Iterator[Metric]:
    """``figures`` is the ``ratelimit`` source's dict; ``tiers`` the per-tier counts (default: this process's)."""
    by_tier = stats.tier_snapshot() if tiers is None else tiers
    decisions = CounterMetricFamily(
        "scaleops_ratelimit_decisions",
        "Limiter decisions by tier and outcome: allowed (from Redis or this process's lease), limited, revoked.",
        labels=["tier", "decision"],
    )
    leased = CounterMetricFamily(
        "scaleops_ratelimit_lease_admissions",
        "Requests allowed from this process's lease of a bucket, without a Redis round trip (part of allowed).",
        labels=["tier"],
    )
    degraded = CounterMetricFamily(
        "scaleops_ratelimit_degraded_decisions",
        "Decisions taken without Redis (unreachable, circuit open, or an invalid tier), by failure mode.",
        labels=["tier", "mode"],
    )
    invalid = CounterMetricFamily(
        "scaleops_ratelimit_invalid_tier_decisions",
        "Requests of a tier whose row is invalid (check scaleops.E207), answered by its failure mode.",
        labels=["tier"],
    )
    summed: dict[tuple[str, str], float] = {}
    for (tier, name), count in sorted(by_tier.items()):
        if name in DECISIONS:
            summed[(tier, DECISIONS[name])] = summed.get((tier, DECISIONS[name]), 0) + count
        if name == "allowed_from_lease":
            leased.add_metric([tier], count)
        elif name.startswith("degraded_"):
            degraded.add_metric([tier, name.removeprefix("degraded_")], count)
        elif name == "invalid_tier":
            invalid.add_metric([tier], count)
    for (tier, decision), total in sorted(summed.items()):
        decisions.add_metric([tier, decision], total)
    yield from (decisions, leased, degraded, invalid)

    rejected = CounterMetricFamily(
        "scaleops_ratelimit_rejected_keys",
        "Requests refused with 401 because of their API key, by reason.",
        labels=["reason"],
    )
    events = CounterMetricFamily("scaleops_ratelimit_events", "Other counts of the limiter, by name.", labels=["event"])
    simple = {name: CounterMetricFamily(metric, text, 0) for name, (metric, text) in SIMPLE.items()}
    for name, value in sorted(figures.items()):
        figure = number(value)
        if figure is None or name in DECISIONS or name == "invalid_tier" or name.startswith("degraded_"):
            continue
        if name.startswith("rejected_"):
            rejected.add_metric([name.removeprefix("rejected_")], figure)
        elif name in simple:
            simple[name] = CounterMetricFamily(SIMPLE[name][0], SIMPLE[name][1], figure)
        else:
            events.add_metric([name], figure)
    yield rejected
    yield from simple.values()
    if events.samples:
        yield events
