"""A Django REST framework throttle backed by the same limiter and tiers.

    REST_FRAMEWORK = {"DEFAULT_THROTTLE_CLASSES": ["django_scaleops.ratelimit.drf.ApiKeyTierThrottle"]}

Use it instead of the middleware for DRF-only APIs (not both: each would spend a request).
A key that fails to resolve is throttled as an anonymous caller; authenticate it with your
DRF authentication class. Failed keys count against their address as with the middleware
(``SCALEOPS_THROTTLE_AUTH_FAILURE_RATE``): beyond it, requests are throttled without a lookup.
"""

from __future__ import annotations

from typing import Any

from rest_framework.throttling import BaseThrottle

from django_scaleops.ratelimit import callers as rl
from django_scaleops.ratelimit.bucket import limiter
from django_scaleops.ratelimit.guard import AuthThrottled
from django_scaleops.ratelimit.resolver import KeyRejected, resolve


class ApiKeyTierThrottle(BaseThrottle):  # type: ignore[misc]
    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request: Any, view: Any) -> bool:
        django_request = getattr(request, "_request", request)
        raw = rl.raw_key(django_request)
        try:
            api_key = resolve(raw, django_request) if raw is not None else None
        except KeyRejected:
            api_key = None
        except AuthThrottled as throttled:  # too many failed keys from this address: no lookup
            self._wait = float(throttled.retry_after)
            return False
        base = api_key.policy if api_key is not None else rl.anonymous_policy()
        if base is None:
            return True
        rules = rl.view_rules(django_request)
        if rules.exempt:
            return True
        policy, slot = rl.effective_policy(base, rules)
        decision = limiter.check(
            rl.caller_identity(api_key, django_request), policy, slot=slot, record_usage=api_key is not None
        )
        self._wait = decision.retry_after if not decision.allowed else None
        return decision.allowed

    def wait(self) -> float | None:
        return self._wait
