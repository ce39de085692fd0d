from __future__ import annotations

from django.apps import AppConfig


class MonitoringAppConfig(AppConfig):
    name = "tests.monitoringapp"
    label = "monitoringapp"
    default_auto_field = "django.db.models.BigAutoField"
