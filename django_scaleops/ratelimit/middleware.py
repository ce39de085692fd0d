"""``ApiKeyThrottleMiddleware``: API-key authentication and tiered rate limiting, sync and async.

A warm request costs one dictionary lookup for its key and one EVALSHA in Redis (none while this
process holds a lease of the key's bucket); no database query. A key that is not cached yet is
looked up only while its client address has failed authentications left (``ratelimit.guard``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse

from django_scaleops.hybrid import HybridMiddleware
from django_scaleops.ratelimit import callers as rl
from django_scaleops.ratelimit.bucket import limiter
from django_scaleops.ratelimit.decision import Decision
from django_scaleops.ratelimit.guard import AuthThrottled
from django_scaleops.ratelimit.policy import Policy
from django_scaleops.ratelimit.resolver import KeyRejected, ResolvedKey, aresolve, resolve
from django_scaleops.ratelimit.responses import (
    add_headers,
    lookup_unavailable,
    refusal,
    too_many_failures,
    unauthorized,
)
from django_scaleops.ratelimit.stats import stats

logger = logging.getLogger("django_scaleops.ratelimit")


@dataclass(frozen=True)
class _Plan:
    identity: str
    policy: Policy
    slot: str
    record_usage: bool


class ApiKeyThrottleMiddleware(HybridMiddleware):
    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.async_mode:
            return self.__acall__(request)
        rules = rl.view_rules(request)
        if rules.exempt:
            exempt: HttpResponse = self.get_response(request)
            return exempt
        raw = rl.raw_key(request)
        try:
            api_key = resolve(raw, request) if raw is not None else None
            anonymous = None if api_key else rl.anonymous_policy()
        except (KeyRejected, AuthThrottled, DatabaseError) as exc:
            return self._lookup_refused(exc)
        plan = self._plan(request, api_key, rules, anonymous)
        decision = self._check(plan) if plan else None
        return self._respond(request, decision, self.get_response)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        rules = rl.view_rules(request)
        if rules.exempt:
            exempt: HttpResponse = await self.get_response(request)
            return exempt
        raw = rl.raw_key(request)
        try:
            api_key = await aresolve(raw, request) if raw is not None else None
            anonymous = None if api_key else await rl.aanonymous_policy()
        except (KeyRejected, AuthThrottled, DatabaseError) as exc:
            return self._lookup_refused(exc)
        plan = self._plan(request, api_key, rules, anonymous)
        decision = limiter.leased(plan.identity, plan.policy, plan.slot, plan.record_usage) if plan else None
        if plan and decision is None:
            # redis-py here is synchronous (django-redis' pool); a worker thread keeps the loop free.
            decision = await sync_to_async(self._check, thread_sensitive=False)(plan)
        refused = refusal(decision) if decision else None
        if refused is not None:
            return refused
        request.scaleops_rate_limit = decision  # type: ignore[attr-defined]
        response: HttpResponse = await self.get_response(request)
        if decision is not None:
            add_headers(response, decision)
        return response

    @staticmethod
    def _lookup_refused(exc: KeyRejected | AuthThrottled | DatabaseError) -> HttpResponse:
        """The answer when the key cannot be used: 401, 429 (too many failures) or 503."""
        if isinstance(exc, KeyRejected):
            stats.incr(f"rejected_{exc.reason}")
            return unauthorized(str(exc))
        if isinstance(exc, AuthThrottled):
            return too_many_failures(exc.retry_after)
        # Only on a cold key (warm keys never query): without the row we cannot know the key's tier.
        stats.incr("lookup_failed")
        logger.warning("API key lookup failed (%s): answering 503", type(exc).__name__)
        return lookup_unavailable()

    @staticmethod
    def _plan(
        request: HttpRequest, api_key: ResolvedKey | None, rules: rl.Rules, anonymous: Policy | None
    ) -> _Plan | None:
        request.scaleops_api_key = api_key  # type: ignore[attr-defined]
        base = api_key.policy if api_key is not None else anonymous
        if base is None:
            return None
        policy, slot = rl.effective_policy(base, rules)
        return _Plan(rl.caller_identity(api_key, request), policy, slot, api_key is not None)

    @staticmethod
    def _check(plan: _Plan) -> Decision:
        return limiter.check(plan.identity, plan.policy, slot=plan.slot, record_usage=plan.record_usage)

    @staticmethod
    def _respond(
        request: HttpRequest, decision: Decision | None, get_response: Callable[[HttpRequest], HttpResponse]
    ) -> HttpResponse:
        refused = refusal(decision) if decision else None
        if refused is not None:
            return refused
        request.scaleops_rate_limit = decision  # type: ignore[attr-defined]
        response = get_response(request)
        if decision is not None:
            add_headers(response, decision)
        return response
