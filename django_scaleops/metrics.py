"""A registry of figures each capability exposes to the metrics and health endpoints.

A capability registers a source once (in ``AppConfig.ready()`` or at import)::

    metrics.register_source("cache", cache_stats)   # returns a JSON-serialisable dict

and the monitoring endpoints call every source when asked. Sources must be cheap and must not
raise: a failing source is reported as ``{"error": "<ExceptionType>"}`` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MetricsSource = Callable[[], dict[str, Any]]

_sources: dict[str, MetricsSource] = {}


def register_source(name: str, source: MetricsSource) -> None:
    """Register (or replace) the figures published under ``name``."""
    _sources[name] = source


def unregister_source(name: str) -> None:
    _sources.pop(name, None)


def collect() -> dict[str, dict[str, Any]]:
    """Every registered source's figures, by name. A source that raises reports only its type."""
    figures: dict[str, dict[str, Any]] = {}
    for name, source in sorted(_sources.items()):
        try:
            figures[name] = source()
        except Exception as exc:  # one broken source must not break the endpoint
            figures[name] = {"error": type(exc).__name__}
    return figures
