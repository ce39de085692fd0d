from __future__ import annotations

from django.apps import AppConfig


class RouterAppConfig(AppConfig):
    name = "tests.routerapp"
    label = "routerapp"
    default_auto_field = "django.db.models.BigAutoField"
