"""``rate_limit_status``: a key holder asks for its own quota without spending any.

The endpoint is exempt from the tier limits (asking must not cost quota), so it limits itself:
keys go through the same failed-authentication guard as the middleware (an address probing keys
gets ``429`` before any lookup), and each key may ask ``SCALEOPS_THROTTLE_STATUS_RATE`` times
(its own bucket, default ``60/m``).
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from django_scaleops.conf import conf
from django_scaleops.ratelimit import callers as rl
from django_scaleops.ratelimit.bucket import limiter
from django_scaleops.ratelimit.guard import AuthThrottled
from django_scaleops.ratelimit.keys import mask
from django_scaleops.ratelimit.policy import FAIL_LOCAL, Policy, parse_rate
from django_scaleops.ratelimit.redis_keys import key_identity
from django_scaleops.ratelimit.resolver import KeyRejected, resolve
from django_scaleops.ratelimit.responses import (
    add_headers,
    lookup_unavailable,
    refusal,
    too_many_failures,
    unauthorized,
)
from django_scaleops.ratelimit.stats import stats

logger = logging.getLogger("django_scaleops.ratelimit")

STATUS_SLOT = "status"


@lru_cache(maxsize=8)
def _status_policy(rate: str) -> Policy | None:
    try:
        # local: while Redis is down each process still limits the endpoint.
        return parse_rate(rate, name="rate-limit status", failure_mode=FAIL_LOCAL)
    except ValueError as exc:  # reported by check scaleops.E209
        logger.warning("SCALEOPS_THROTTLE_STATUS_RATE is ignored: %s", exc)
        return None


def status_policy() -> Policy | None:
    rate = conf.SCALEOPS_THROTTLE_STATUS_RATE
    return _status_policy(rate) if rate else None


@rl.throttle_exempt
@require_GET
def rate_limit_status(request: HttpRequest) -> HttpResponse:
    raw = rl.raw_key(request)
    if raw is None:
        return unauthorized("Send your API key to see its quota.")
    try:
        api_key = resolve(raw, request)
    except KeyRejected as rejected:
        stats.incr(f"rejected_{rejected.reason}")
        return unauthorized(str(rejected))
    except AuthThrottled as throttled:
        return too_many_failures(throttled.retry_after)
    except DatabaseError as exc:
        stats.incr("lookup_failed")
        logger.warning("API key lookup failed (%s): answering 503", type(exc).__name__)
        return lookup_unavailable()
    identity = key_identity(api_key.id)
    own = status_policy()
    if own is not None:
        asked = limiter.check(identity, own, slot=STATUS_SLOT, counted=False)
        refused = refusal(asked)
        if refused is not None:
            return refused
    policy = api_key.policy
    decision = limiter.check(identity, policy, cost=0)
    response = JsonResponse(
        {
            "key": {"name": api_key.name, "prefix": mask(api_key.prefix)},
            "tier": {
                "name": policy.name,
                "limit": policy.limit,
                "period_seconds": policy.period,
                "burst": policy.burst,
            },
            "remaining": decision.remaining,
            "full_in_seconds": math.ceil(decision.reset_after),
            "degraded": decision.degraded,
        }
    )
    add_headers(response, decision)
    return response
