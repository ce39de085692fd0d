from __future__ import annotations

from django.apps import AppConfig
from django.core.checks import register


class ScaleOpsConfig(AppConfig):
    name = "django_scaleops"
    label = "scaleops"
    verbose_name = "ScaleOps"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Keep this cheap: it runs in every process, including each management command.
        from django_scaleops import checks

        register(checks.check_settings)
        # Each capability registers its own checks and receivers below, one line each.
        from django_scaleops.partitioning.checks import check_partitioned_models

        register(check_partitioned_models)
        from django_scaleops.metrics import register_source
        from django_scaleops.partitioning.health import partition_metrics

        register_source("partitions", partition_metrics)
