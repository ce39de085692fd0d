from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from django_scaleops import metrics


def test_sources_are_collected_and_a_failing_one_is_contained():
    def broken() -> dict[str, object]:
        raise RuntimeError("secret detail that must not leak")

    metrics.register_source("test_ok", lambda: {"hits": 3})
    metrics.register_source("test_broken", broken)
    try:
        figures = metrics.collect()
        assert figures["test_ok"] == {"hits": 3}
        assert figures["test_broken"] == {"error": "RuntimeError"}
    finally:
        metrics.unregister_source("test_ok")
        metrics.unregister_source("test_broken")
    assert "test_ok" not in metrics.collect()


def test_a_translation_is_registered_with_its_source_and_goes_with_it():
    def families(figures: Mapping[str, Any]) -> Iterator[Metric]:
        yield GaugeMetricFamily("scaleops_test_hits", "Hits.", figures["hits"])

    metrics.register_source("test_translated", lambda: {"hits": 3}, families=families)
    try:
        assert metrics.translator("test_translated") is families
        assert metrics.collect()["test_translated"] == {"hits": 3}  # the JSON is the source's own
        metrics.register_source("test_translated", lambda: {"hits": 4})  # replaced without one
        assert metrics.translator("test_translated") is None
        metrics.register_source("test_translated", lambda: {"hits": 4}, families=families)
    finally:
        metrics.unregister_source("test_translated")
    assert metrics.translator("test_translated") is None


def test_every_capability_registers_a_translation():
    for name in ("apm", "bulk", "cache", "partitions", "pgbouncer", "ratelimit", "replicas"):
        assert metrics.translator(name) is not None, name


def test_number_takes_figures_only():
    assert [metrics.number(v) for v in (3, 2.5, True, "7", None, [1])] == [3.0, 2.5, 1.0, None, None, None]
