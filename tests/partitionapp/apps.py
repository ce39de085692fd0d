from __future__ import annotations

from django.apps import AppConfig


class PartitionAppConfig(AppConfig):
    name = "tests.partitionapp"
    label = "partitionapp"
    default_auto_field = "django.db.models.BigAutoField"
