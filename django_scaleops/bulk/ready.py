"""What the app config wires up for the bulk operations when Django starts."""

from __future__ import annotations

from django.core.checks import register
from django.db.models.signals import post_migrate

from django_scaleops import metrics
from django_scaleops.bulk import checks, columns, prometheus, stats


def ready() -> None:
    register(checks.check_bulk_settings)
    metrics.register_source("bulk", stats.snapshot, families=prometheus.prometheus_families)
    # Column types are cached per table; a migration may have changed them.
    post_migrate.connect(columns.forget_table, dispatch_uid="django_scaleops.bulk.forget_table")
