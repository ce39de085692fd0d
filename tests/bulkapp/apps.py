from __future__ import annotations

from django.apps import AppConfig


class BulkAppConfig(AppConfig):
    name = "tests.bulkapp"
    label = "bulkapp"
    default_auto_field = "django.db.models.BigAutoField"
