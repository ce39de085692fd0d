"""The admin lists models: an unmanaged one gives the dashboard its place and its permission."""

from __future__ import annotations

from django.db import models


class Dashboard(models.Model):
    """No table: ``/admin/scaleops/dashboard/`` shows the operations dashboard instead of rows."""

    class Meta:
        app_label = "scaleops"
        managed = False
        verbose_name = "operations dashboard"
        verbose_name_plural = "operations dashboard"
        default_permissions = ("view",)

    def __str__(self) -> str:
        return "operations dashboard"
