"""Tiered API-key rate limiting: one Redis round trip per request, exact under concurrency.

Public API::

    from django_scaleops.ratelimit import throttle_exempt, throttle_override, get_analytics, limiter
    from django_scaleops.ratelimit import publish_key_changes  # after ApiKey.objects...update()
"""

from __future__ import annotations

from django_scaleops.ratelimit.analytics import get_analytics, rollup_usage
from django_scaleops.ratelimit.bucket import limiter
from django_scaleops.ratelimit.callers import throttle_exempt, throttle_override
from django_scaleops.ratelimit.decision import Decision
from django_scaleops.ratelimit.policy import Policy, parse_rate
from django_scaleops.ratelimit.receivers import publish_key_changes

__all__ = [
    "Decision",
    "Policy",
    "get_analytics",
    "limiter",
    "parse_rate",
    "publish_key_changes",
    "rollup_usage",
    "throttle_exempt",
    "throttle_override",
]
