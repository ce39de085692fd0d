"""What the app config wires up for the bulk operations when Django starts."""

from __future__ import annotations

from django.core.checks import register

from django_scaleops import metrics
from django_scaleops.bulk import checks, stats


def ready() -> None:
    register(checks.check_bulk_settings)
    metrics.register_source("bulk", stats.snapshot)
