from __future__ import annotations

from django.apps import AppConfig


class CacheAppConfig(AppConfig):
    name = "tests.cacheapp"
    label = "cacheapp"
    default_auto_field = "django.db.models.BigAutoField"
