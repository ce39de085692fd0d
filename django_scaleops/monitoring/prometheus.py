"""The Prometheus text exposition (format 0.0.4) of the query figures and every metrics source."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from django_scaleops.monitoring.histogram import LogHistogram

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Bucket bounds in seconds: a query histogram's usual range, 0.5 ms to 10 s.
BOUNDS_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render(report: Mapping[str, Any], histograms: Mapping[str, LogHistogram]) -> str:
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    aliases = report["aliases"]
    family("scaleops_queries_total", "counter", "Queries executed, by database alias.")
    for alias, figures in aliases.items():
        lines.append(f'scaleops_queries_total{{alias="{_label(alias)}"}} {figures["queries"]}')
    family("scaleops_slow_queries_total", "counter", "Queries at or above SCALEOPS_MONITOR_SLOW_QUERY_MS, by alias.")
    for alias, figures in aliases.items():
        lines.append(f'scaleops_slow_queries_total{{alias="{_label(alias)}"}} {figures["slow"]}')
    family("scaleops_query_duration_seconds", "histogram", "Query duration, by alias.")
    for alias, hist in histograms.items():
        label = _label(alias)
        for bound, count in hist.cumulative([b * 1_000_000 for b in BOUNDS_SECONDS]):
            lines.append(
                f'scaleops_query_duration_seconds_bucket{{alias="{label}",le="{_number(bound / 1_000_000)}"}} {count}'
            )
        lines.append(f'scaleops_query_duration_seconds_bucket{{alias="{label}",le="+Inf"}} {hist.count}')
        lines.append(f'scaleops_query_duration_seconds_sum{{alias="{label}"}} {_number(hist.total / 1_000_000)}')
        lines.append(f'scaleops_query_duration_seconds_count{{alias="{label}"}} {hist.count}')
    family("scaleops_query_duration_quantile_seconds", "gauge", "Query duration percentiles (within 1%), by alias.")
    for alias, hist in histograms.items():
        for quantile in (0.5, 0.9, 0.95, 0.99):
            value = hist.quantile(quantile)
            if value is not None:
                lines.append(
                    f'scaleops_query_duration_quantile_seconds{{alias="{_label(alias)}",quantile="{quantile}"}}'
                    f" {_number(value / 1_000_000)}"
                )
    health = report["health"]
    family("scaleops_query_health", "gauge", "1 for the current query health status over the window.")
    for status in ("healthy", "degraded", "unhealthy", "unknown"):
        lines.append(f'scaleops_query_health{{status="{status}"}} {int(health["status"] == status)}')
    family("scaleops_query_window_slow_share", "gauge", "Share of slow queries over the health window.")
    lines.append(f"scaleops_query_window_slow_share {_number(health['slow_share'] or 0)}")
    family("scaleops_n_plus_one_hints_total", "counter", "N+1 hints logged.")
    lines.append(f"scaleops_n_plus_one_hints_total {report['n_plus_one_hints']}")
    for source, figures in report.get("sources", {}).items():
        for name, value in _flatten(_NAME_UNSAFE.sub("_", f"scaleops_{source}"), figures):
            family(name, "gauge", f"{source} figure from the metrics registry.")
            lines.append(f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


def _flatten(prefix: str, figures: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """Numeric leaves of a source's dict as ``prefix_key_subkey``; strings and lists are skipped."""
    for key, value in sorted(figures.items()):
        name = f"{prefix}_{_NAME_UNSAFE.sub('_', str(key))}"
        if isinstance(value, int | float):  # bool included, as 0/1
            yield name, float(value)
        elif isinstance(value, Mapping):
            yield from _flatten(name, value)
