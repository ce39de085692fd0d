"""The bulk operations' figures as Prometheus families (``/metrics``), per operation."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, Metric

from django_scaleops.metrics import number

# Longest suffix first: "create_failed_batches" ends with "_batches" too.
SUFFIXES = {
    "_failed_batches": ("scaleops_bulk_failed_batches", "Batches that failed (after their retries)."),
    "_batches": ("scaleops_bulk_batches", "Batches committed."),
    "_rows": ("scaleops_bulk_rows", "Rows created, updated, deleted or processed in committed batches."),
    "_retries": ("scaleops_bulk_retries", "Batches retried after a transient error."),
}


def prometheus_families(figures: Mapping[str, Any]) -> Iterator[Metric]:
    families = {
        suffix: CounterMetricFamily(name, text, labels=["operation"]) for suffix, (name, text) in SUFFIXES.items()
    }
    for key, value in sorted(figures.items()):
        count = number(value)
        suffix = next((s for s in SUFFIXES if key.endswith(s)), None)
        if count is not None and suffix is not None:
            families[suffix].add_metric([key.removesuffix(suffix)], count)
    yield from families.values()
