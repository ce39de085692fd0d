"""A registry of figures each capability exposes to the metrics and health endpoints.

A capability registers a source once (in ``AppConfig.ready()`` or at import)::

    metrics.register_source("cache", cache_stats)   # returns a JSON-serialisable dict
    metrics.register_source("cache", cache_stats, families=cache_families)  # and its Prometheus form

and the monitoring endpoints call every source when asked. Sources must be cheap and must not
raise: a failing source is reported as ``{"error": "<ExceptionType>"}`` instead.

``families``, when given, turns the source's figures into Prometheus metric families (names
without dimensions, dimensions as labels, counters as counters, base units); ``/metrics``
publishes a source without one through a generic gauge with the figure's path as a label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

MetricsSource = Callable[[], dict[str, Any]]
FamiliesTranslator = Callable[[Mapping[str, Any]], Iterable["Metric"]]

_sources: dict[str, MetricsSource] = {}
_translators: dict[str, FamiliesTranslator] = {}


def register_source(name: str, source: MetricsSource, *, families: FamiliesTranslator | None = None) -> None:
    """Register (or replace) the figures published under ``name``.

    Args:
        name: the source's key in ``/metrics/queries`` (``sources``) and its ``source`` label.
        source: returns the figures, a JSON-serialisable dict.
        families: turns those figures into Prometheus metric families for ``/metrics``; without
            it the numeric figures are published as ``scaleops_source_value{source, figure}``.
    """
    _sources[name] = source
    if families is None:
        _translators.pop(name, None)
    else:
        _translators[name] = families


def unregister_source(name: str) -> None:
    _sources.pop(name, None)
    _translators.pop(name, None)


def translator(name: str) -> FamiliesTranslator | None:
    """The Prometheus translation registered with source ``name``, if any."""
    return _translators.get(name)


def collect() -> dict[str, dict[str, Any]]:
    """Every registered source's figures, by name. A source that raises reports only its type."""
    figures: dict[str, dict[str, Any]] = {}
    for name, source in sorted(_sources.items()):
        try:
            figures[name] = source()
        except Exception as exc:  # one broken source must not break the endpoint
            figures[name] = {"error": type(exc).__name__}
    return figures


def number(value: Any) -> float | None:
    """``value`` as a float when it is a figure (a bool counts as 0/1), else None (text, None, lists)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None
