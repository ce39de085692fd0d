"""``key`` and ``rate`` callables for django-ratelimit, so its decorator follows our tiers.

    from django_ratelimit.decorators import ratelimit
    from django_scaleops.ratelimit.ratelimit_glue import tier_key, tier_rate

    @ratelimit(key=tier_key, rate=tier_rate, block=True)
    def view(request): ...

django-ratelimit then counts in its own fixed windows (no burst); our middleware is exact.
"""

from __future__ import annotations

from django.http import HttpRequest

from django_scaleops.ratelimit import callers as rl
from django_scaleops.ratelimit.guard import AuthThrottled
from django_scaleops.ratelimit.policy import FAIL_CLOSED, FAIL_OPEN
from django_scaleops.ratelimit.resolver import KeyRejected, ResolvedKey, resolve


def _api_key(request: HttpRequest) -> ResolvedKey | None:
    cached = getattr(request, "scaleops_api_key", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    raw = rl.raw_key(request)
    try:
        return resolve(raw, request) if raw is not None else None
    except (KeyRejected, AuthThrottled):  # limited as its address, like a caller without a key
        return None


def tier_key(group: str, request: HttpRequest) -> str:
    """The key id for a valid API key, else the client IP."""
    return rl.caller_identity(_api_key(request), request)


def tier_rate(group: str, request: HttpRequest) -> str | None:
    """``"<limit>/<period>s"`` of the caller's tier (or the anonymous tier); None means unlimited.

    An invalid tier row follows its failure mode: ``open`` unlimited, ``closed`` nothing admitted.
    """
    api_key = _api_key(request)
    policy = api_key.policy if api_key is not None else rl.anonymous_policy()
    if policy is None:
        return None
    if policy.invalid is not None:  # a broken tier row: its failure mode, as with the middleware
        if policy.failure_mode == FAIL_OPEN:
            return None
        if policy.failure_mode == FAIL_CLOSED:
            return f"0/{policy.period}s"
    return f"{policy.limit}/{policy.period}s"
