"""The app's admin module, as Django's autodiscovery expects one: the admin of tiers and API keys
is in ``ratelimit/admin.py``."""

from __future__ import annotations

from django_scaleops.dashboard import admin as dashboard_admin
from django_scaleops.ratelimit import admin as ratelimit_admin

__all__ = ["dashboard_admin", "ratelimit_admin"]
