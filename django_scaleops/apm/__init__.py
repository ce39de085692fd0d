"""Sentry and Datadog from Django settings, one shared sampling decision, span and metric helpers.

Importing this package imports neither SDK; ``setup_apm()`` (run by the app when
``SCALEOPS_APM_ENABLED`` names a vendor) does.
"""

from __future__ import annotations

from django_scaleops.apm.helpers import (
    CurrentSpan,
    current_span,
    custom_span,
    database_span,
    external_api_span,
    measure_performance,
    metric_figures,
    record_metric,
    track_timing,
)

__all__ = [
    "CurrentSpan",
    "current_span",
    "custom_span",
    "database_span",
    "external_api_span",
    "measure_performance",
    "metric_figures",
    "record_metric",
    "track_timing",
]
