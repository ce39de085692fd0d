from __future__ import annotations

from django.apps import AppConfig
from django.core.checks import Tags, register


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
        from django.test.signals import setting_changed

        from django_scaleops.http.checks import check_http
        from django_scaleops.monitoring import checks as monitoring_checks
        from django_scaleops.monitoring import monitor

        register(monitoring_checks.check_monitoring)
        register(check_http)
        setting_changed.connect(monitor.on_setting_changed, dispatch_uid="scaleops-monitor-settings")
        monitor.install_if_enabled()
        from django_scaleops.pgbouncer.apps import ready as pgbouncer_ready

        pgbouncer_ready()
        from django_scaleops.bulk.ready import ready as bulk_ready

        bulk_ready()  # bulk operations: check E701, "bulk" metrics source
        from django_scaleops.db import checks as router_checks
        from django_scaleops.db import receivers as router_receivers

        register(router_checks.check_router)
        router_receivers.connect()
        from django_scaleops import cache

        cache.connect()  # checks E3xx, write watcher, bulk receiver, metrics source
        from django_scaleops.apm.setup import on_ready as observability_ready

        observability_ready()  # logging/APM checks, the "apm" metrics source, SDKs only if configured
        from django_scaleops import metrics
        from django_scaleops.ratelimit import checks as ratelimit_checks
        from django_scaleops.ratelimit import gcra, receivers

        register(ratelimit_checks.check_throttle_settings)
        register(ratelimit_checks.check_tiers, Tags.database)
        receivers.connect()
        metrics.register_source("ratelimit", gcra.stats.snapshot)
        from django_scaleops.partitioning.checks import check_partitioned_models

        register(check_partitioned_models)
        from django_scaleops.metrics import register_source
        from django_scaleops.partitioning.health import partition_metrics

        register_source("partitions", partition_metrics)
