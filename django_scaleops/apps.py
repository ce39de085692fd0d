from __future__ import annotations

from django.apps import AppConfig
from django.core.checks import register
from django.utils.module_loading import import_string

# Each capability wires itself up (checks, receivers, metrics sources) in one function.
CAPABILITIES_READY = (
    "django_scaleops.apm.setup.on_ready",  # logging and APM; SDKs only if configured
    "django_scaleops.monitoring.ready.ready",
    "django_scaleops.http.ready.ready",
    "django_scaleops.replicas.ready.ready",  # read replicas
    "django_scaleops.pgbouncer.ready.ready",
    "django_scaleops.bulk.ready.ready",
    "django_scaleops.cache.connect",
    "django_scaleops.ratelimit.ready.ready",
    "django_scaleops.partitioning.ready.ready",
    "django_scaleops.dashboard.ready.ready",  # history sampling hook, slow-query call sites
)


class ScaleOpsConfig(AppConfig):
    name = "django_scaleops"
    label = "scaleops"
    verbose_name = "ScaleOps"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Keep this cheap: it runs in every process, including each management command.
        from django_scaleops import checks

        register(checks.check_settings)
        register(checks.check_moved_paths)
        for path in CAPABILITIES_READY:
            import_string(path)()
        # Last: the capabilities above have said which execute wrappers they need.
        from django_scaleops import wrappers

        wrappers.connect()
