"""The figures of ``record_metric`` as Prometheus families (``/metrics``), per metric name.

Values keep the unit the application recorded them in (``track_timing``: milliseconds).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric, SummaryMetricFamily

from django_scaleops.metrics import number


def prometheus_families(figures: Mapping[str, Any]) -> Iterator[Metric]:
    recorded = SummaryMetricFamily(
        "scaleops_apm_metric",
        "Values recorded with record_metric/track_timing in this process: how many and their sum (in the"
        " unit recorded; track_timing: milliseconds), by metric name.",
        labels=["metric"],
    )
    last = GaugeMetricFamily(
        "scaleops_apm_metric_last", "The last value recorded with record_metric, by metric name.", labels=["metric"]
    )
    for name, values in sorted(figures.items()):
        if not isinstance(values, Mapping):
            continue
        count, total = number(values.get("count")), number(values.get("total"))
        if count is not None and total is not None:
            recorded.add_metric([name], int(count), total)
        value = number(values.get("last"))
        if value is not None:
            last.add_metric([name], value)
    yield recorded
    yield last
