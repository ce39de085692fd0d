"""The app's models module, as Django expects one: the rate-limit models live in ``ratelimit/models.py``.

They keep the app label ``scaleops`` and their migrations (the label comes from the app, not from
the module).
"""

from __future__ import annotations

from django_scaleops.dashboard.models import Dashboard
from django_scaleops.ratelimit.models import ApiKey, ApiKeyManager, ApiKeyQuerySet, ApiKeyUsage, Tier

__all__ = ["ApiKey", "ApiKeyManager", "ApiKeyQuerySet", "ApiKeyUsage", "Dashboard", "Tier"]
