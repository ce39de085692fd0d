"""What the app does at start-up for PgBouncer: checks, the metrics source, the fork guard."""

from __future__ import annotations

from django_scaleops import metrics
from django_scaleops.conf import conf
from django_scaleops.pgbouncer.checks import register_checks
from django_scaleops.pgbouncer.forking import install_fork_guard
from django_scaleops.pgbouncer.metrics import metrics_source
from django_scaleops.pgbouncer.prometheus import prometheus_families


def ready() -> None:
    register_checks()
    metrics.register_source("pgbouncer", metrics_source, families=prometheus_families)
    if conf.SCALEOPS_PGBOUNCER_FORK_GUARD is True:
        install_fork_guard()
