"""``rate_limit_status``: a key holder asks for its own quota without spending any."""

from __future__ import annotations

import math

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from django_scaleops.ratelimit import callers as rl
from django_scaleops.ratelimit.gcra import key_identity, limiter
from django_scaleops.ratelimit.keys import mask
from django_scaleops.ratelimit.resolver import KeyRejected, resolve
from django_scaleops.ratelimit.responses import add_headers, unauthorized


@rl.throttle_exempt
@require_GET
def rate_limit_status(request: HttpRequest) -> HttpResponse:
    raw = rl.raw_key(request)
    if raw is None:
        return unauthorized("Send your API key to see its quota.")
    try:
        api_key = resolve(raw)
    except KeyRejected as rejected:
        return unauthorized(str(rejected))
    policy = api_key.policy
    decision = limiter.check(key_identity(api_key.id), policy, cost=0)
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
