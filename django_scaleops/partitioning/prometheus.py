"""The partitions' figures as Prometheus families (``/metrics``), per partitioned model."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from django_scaleops.metrics import number

FIGURES = {
    "partitions": ("scaleops_partitions", "Partitions of the model's table, the default partition excluded."),
    "future_partitions": ("scaleops_partitions_ahead", "Partitions made ahead: starting after today (UTC)."),
    "default_rows_estimate": (
        "scaleops_partition_default_rows",
        "Rows waiting in the default partition (the planner's estimate: no scan).",
    ),
}


def prometheus_families(figures: Mapping[str, Any]) -> Iterator[Metric]:
    families = {key: GaugeMetricFamily(name, text, labels=["model"]) for key, (name, text) in FIGURES.items()}
    for model, values in sorted(figures.items()):
        if not isinstance(values, Mapping):
            continue
        for key, family in families.items():
            value = number(values.get(key))
            if value is not None:
                family.add_metric([model], value)
    yield from families.values()
