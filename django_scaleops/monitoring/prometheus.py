"""``/metrics``: the query figures and every metrics source as Prometheus metric families.

The page is written by ``prometheus_client``'s exposition from a registry of our own (never the
process-global one), with one collector that reads the figures handed to it. Dimensions are
labels (alias, model, database, tier, prefix, ...), running totals are counters, durations are in
seconds and sizes in bytes. The query duration is a histogram: percentiles are left to PromQL
(``histogram_quantile``). Each capability translates its own figures (the ``families`` given to
``metrics.register_source``); a source without a translation is published through the generic
``scaleops_source_value{source, figure}`` gauge.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from django_scaleops import metrics
from django_scaleops.monitoring.histogram import LogHistogram

logger = logging.getLogger("django_scaleops.monitoring")

# The text format every Prometheus 2.x and promtool reads (prometheus_client's own default moved on).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Bucket bounds in seconds: a query histogram's usual range, 0.5 ms to 10 s.
BOUNDS_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HEALTH_STATUSES = ("healthy", "degraded", "unhealthy", "unknown")


class ScaleOpsCollector(Collector):
    """Yields the families of one report: the query monitor's, then each source's."""

    def __init__(self, report: Mapping[str, Any], histograms: Mapping[str, LogHistogram]) -> None:
        self.report = report
        self.histograms = histograms

    def collect(self) -> Iterable[Metric]:
        seen: set[str] = set()
        for family in (*query_families(self.report, self.histograms), *self._source_families()):
            if family.name in seen:  # two translations chose one name: the page must stay valid
                logger.warning("metrics: family %s published twice; the second is dropped", family.name)
                continue
            seen.add(family.name)
            yield family

    def _source_families(self) -> Iterator[Metric]:
        sources: Mapping[str, Mapping[str, Any]] = self.report.get("sources", {})
        up = GaugeMetricFamily(
            "scaleops_metrics_source_up",
            "1 when the metrics source answered and its figures were translated, 0 when it failed.",
            labels=["source"],
        )
        generic = GaugeMetricFamily(
            "scaleops_source_value",
            "A numeric figure of a metrics source registered without a Prometheus translation"
            " (figure: the path of the figure in the source's JSON).",
            labels=["source", "figure"],
        )
        translated: list[Metric] = []
        for name, figures in sources.items():
            if _failed(figures):
                up.add_metric([name], 0)
                continue
            translate = metrics.translator(name)
            if translate is None:
                for path, value in flatten(figures):
                    generic.add_metric([name, path], value)
                up.add_metric([name], 1)
                continue
            try:
                families = list(translate(figures))
            except Exception as exc:  # one broken translation must not break the page
                logger.warning("metrics: the Prometheus translation of %s failed (%s)", name, type(exc).__name__)
                up.add_metric([name], 0)
                continue
            translated.extend(families)
            up.add_metric([name], 1)
        yield up
        if generic.samples:
            yield generic
        yield from translated


def _failed(figures: Any) -> bool:
    return not isinstance(figures, Mapping) or (set(figures) == {"error"})


def query_families(report: Mapping[str, Any], histograms: Mapping[str, LogHistogram]) -> Iterator[Metric]:
    """The query monitor's families: counts, slow counts and durations per alias, health."""
    aliases: Mapping[str, Mapping[str, Any]] = report["aliases"]
    queries = CounterMetricFamily("scaleops_queries", "Queries executed, by database alias.", labels=["alias"])
    slow = CounterMetricFamily(
        "scaleops_slow_queries",
        "Queries that took at least SCALEOPS_MONITOR_SLOW_QUERY_MS, by database alias.",
        labels=["alias"],
    )
    for alias, figures in sorted(aliases.items()):
        queries.add_metric([alias], figures["queries"])
        slow.add_metric([alias], figures["slow"])
    yield queries
    yield slow
    duration = HistogramMetricFamily(
        "scaleops_query_duration_seconds",
        "Query duration, by database alias (bucket counts within 1% of the bound).",
        labels=["alias"],
    )
    for alias, hist in sorted(histograms.items()):
        buckets: list[tuple[str, float]] = [
            (_bound(bound / 1_000_000), count)
            for bound, count in hist.cumulative([b * 1_000_000 for b in BOUNDS_SECONDS])
        ]
        buckets.append(("+Inf", hist.count))
        duration.add_metric([alias], buckets, hist.total / 1_000_000)
    yield duration
    yield CounterMetricFamily(
        "scaleops_n_plus_one_hints", "N+1 hints logged (one per fingerprint per request).", report["n_plus_one_hints"]
    )
    health = report["health"]
    status = GaugeMetricFamily(
        "scaleops_query_health",
        "1 for the query health status over the health window (share of slow queries), 0 for the others.",
        labels=["status"],
    )
    for name in HEALTH_STATUSES:
        status.add_metric([name], int(health["status"] == name))
    yield status
    yield GaugeMetricFamily(
        "scaleops_query_window_queries",
        "Queries in the health window (SCALEOPS_MONITOR_HEALTH_WINDOW seconds).",
        health["queries"],
    )
    yield GaugeMetricFamily("scaleops_query_window_slow_queries", "Slow queries in the health window.", health["slow"])
    yield GaugeMetricFamily(
        "scaleops_query_window_slow_ratio",
        "Share of slow queries in the health window (0 when it saw no query).",
        health["slow_share"] or 0,
    )
    scope = GaugeMetricFamily(
        "scaleops_query_figures_scope",
        "1 for where the query figures come from: fleet (summed in Redis) or process (Redis unreachable or off).",
        labels=["scope"],
    )
    for name in ("fleet", "process"):
        scope.add_metric([name], int(report.get("scope") == name))
    yield scope


def _bound(seconds: float) -> str:
    text = repr(seconds)
    return text[:-2] if text.endswith(".0") else text


def flatten(figures: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """Numeric leaves of a source's figures as ``(path, value)``: ``"a.b"`` for nested dicts,
    ``"a.0.b"`` for list items; text and None are skipped, booleans count as 0/1."""
    for key, value in sorted(figures.items(), key=lambda item: str(item[0])):
        path = f"{prefix}{key}"
        yield from _leaves(path, value)


def _leaves(path: str, value: Any) -> Iterator[tuple[str, float]]:
    figure = metrics.number(value)
    if figure is not None:
        yield path, figure
    elif isinstance(value, Mapping):
        yield from flatten(value, f"{path}.")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _leaves(f"{path}.{index}", item)


def render(report: Mapping[str, Any], histograms: Mapping[str, LogHistogram]) -> str:
    """The page: ``report`` as ``query_report()`` builds it, ``histograms`` the per-alias ones."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScaleOpsCollector(report, histograms))
    return generate_latest(registry).decode()
