"""Signal receivers of the router, connected once from ``AppConfig.ready()``.

The router's execute wrappers are put on connections by ``django_scaleops.wrappers``.
"""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig, apps
from django.core.signals import setting_changed
from django.db.models.signals import post_migrate, pre_migrate

from django_scaleops import metrics
from django_scaleops.replicas import prometheus, routing
from django_scaleops.replicas.state import set_migrating


def connect() -> None:
    setting_changed.connect(on_setting_changed, dispatch_uid="scaleops.router.setting_changed")
    pre_migrate.connect(on_pre_migrate, dispatch_uid="scaleops.router.pre_migrate")
    metrics.register_source("replicas", routing.metrics_source, families=prometheus.prometheus_families)


def on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in ("DATABASE_ROUTERS", "DATABASES") or setting.startswith("SCALEOPS_ROUTER_"):
        routing.reset_pool()


def on_pre_migrate(sender: AppConfig, **kwargs: Any) -> None:
    # Migrations, RunPython and post_migrate handlers read what they just wrote: primary only.
    set_migrating(True)
    # (Re)connected now so it runs after every other post_migrate receiver.
    post_migrate.disconnect(dispatch_uid="scaleops.router.post_migrate")
    post_migrate.connect(on_post_migrate, dispatch_uid="scaleops.router.post_migrate")


def on_post_migrate(sender: AppConfig, **kwargs: Any) -> None:
    with_models = [config for config in apps.get_app_configs() if config.models_module is not None]
    if with_models and sender is with_models[-1]:
        set_migrating(False)
