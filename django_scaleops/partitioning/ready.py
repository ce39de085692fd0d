"""What the app does at start-up for partitioning: checks and the metrics source."""

from __future__ import annotations

from django.core.checks import register

from django_scaleops import metrics
from django_scaleops.partitioning.checks import check_partitioned_models
from django_scaleops.partitioning.health import partition_metrics
from django_scaleops.partitioning.prometheus import prometheus_families


def ready() -> None:
    register(check_partitioned_models)
    metrics.register_source("partitions", partition_metrics, families=prometheus_families)
