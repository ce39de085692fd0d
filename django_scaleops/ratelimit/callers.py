"""From a request to what limits it: the key it presents, its client IP and the policy that applies."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

from django.conf import settings
from django.http import HttpRequest
from django.urls import Resolver404, resolve
from django.utils.module_loading import import_string

from django_scaleops.conf import conf
from django_scaleops.ratelimit.addresses import client_ip
from django_scaleops.ratelimit.policy import Policy, parse_rate
from django_scaleops.ratelimit.redis_keys import ip_identity, key_identity
from django_scaleops.ratelimit.resolver import ResolvedKey

F = TypeVar("F", bound=Callable[..., Any])

EXEMPT_ATTR = "scaleops_throttle_exempt"
OVERRIDE_ATTR = "scaleops_throttle_override"


def throttle_exempt(view: F) -> F:
    """Mark a view as never rate limited (keys are not even looked up)."""
    setattr(view, EXEMPT_ATTR, True)
    return view


def throttle_override(rate: str) -> Callable[[F], F]:
    """Limit a view by its own bucket per caller, e.g. ``@throttle_override("5/m burst 2")``.

    The rate is validated at import time, so a typo fails loudly at start-up.
    """
    parse_rate(rate, name="override")

    def decorate(view: F) -> F:
        setattr(view, OVERRIDE_ATTR, rate)
        return view

    return decorate


@dataclass(frozen=True)
class Rules:
    exempt: bool = False
    override: str | None = None  # rate string
    override_slot: str = ""
    override_name: str = ""


def _slot(text: str) -> str:
    return "p" + hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:10]


# Rules by (urlconf, path): resolving the path again costs more than the rest of a warm check.
# Bounded (emptied when full, e.g. by a scan of random paths) and emptied on setting_changed,
# which is how URLconfs and throttle settings change (override_settings).
_rules_by_path: dict[tuple[Any, str], Rules] = {}
RULES_CACHE_SIZE = 4096


def forget_rules(**kwargs: Any) -> None:
    _rules_by_path.clear()


def view_rules(request: HttpRequest) -> Rules:
    """Exemptions and overrides for this path, from settings first, then the view's decorators."""
    key = (getattr(request, "urlconf", None) or settings.ROOT_URLCONF, request.path_info)
    rules = _rules_by_path.get(key)
    if rules is None:
        rules = _path_rules(*key)
        if len(_rules_by_path) >= RULES_CACHE_SIZE:
            _rules_by_path.clear()
        _rules_by_path[key] = rules
    return rules


def _path_rules(urlconf: Any, path: str) -> Rules:
    for prefix in conf.SCALEOPS_THROTTLE_EXEMPT_PATHS:
        if path.startswith(prefix):
            return Rules(exempt=True)
    for prefix, rate in conf.SCALEOPS_THROTTLE_PATH_RATES.items():
        if path.startswith(prefix):
            return Rules(override=rate, override_slot=_slot(prefix), override_name=prefix)
    try:
        match = resolve(path, urlconf)
    except Resolver404:
        return Rules()
    view = match.func
    if getattr(view, EXEMPT_ATTR, False):
        return Rules(exempt=True)
    override: str | None = getattr(view, OVERRIDE_ATTR, None)
    if override is not None:
        name = match.view_name or match._func_path
        return Rules(override=override, override_slot=_slot(name), override_name=name)
    return Rules()


@lru_cache(maxsize=256)
def _override_policy(rate: str, name: str, failure_mode: str, expose_headers: bool) -> Policy:
    policy = parse_rate(rate, name=name, failure_mode=failure_mode)
    return Policy(policy.name, policy.limit, policy.period, policy.burst, failure_mode, expose_headers)


def effective_policy(base: Policy, rules: Rules) -> tuple[Policy, str]:
    """The policy and bucket slot for a caller whose tier is ``base``, given the path's rules.

    An invalid tier (``Policy.invalid``) keeps its own policy on every path: its failure mode decides.
    """
    if rules.override is None or base.invalid is not None:
        return base, "tier"
    return _override_policy(rules.override, rules.override_name, base.failure_mode, base.expose_headers), (
        rules.override_slot
    )


def raw_key(request: HttpRequest) -> str | None:
    """The key a request presents, or None. Header names and scheme come from settings."""
    func = conf.SCALEOPS_THROTTLE_KEY_FUNC
    if func:
        getter: Callable[[HttpRequest], str | None] = import_string(func)
        return getter(request)
    # request.META rather than request.headers, which copies every header on first use.
    authorization: str = request.META.get("HTTP_AUTHORIZATION", "")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == conf.SCALEOPS_THROTTLE_AUTH_SCHEME.lower() and value.strip():
            return value.strip()
    header = conf.SCALEOPS_THROTTLE_KEY_HEADER
    if header:
        presented: str = request.META.get(_meta_name(header), "")
        if presented.strip():
            return presented.strip()
    return None


@lru_cache(maxsize=16)
def _meta_name(header: str) -> str:
    """``X-API-Key`` -> ``HTTP_X_API_KEY``, as Django names it in ``request.META``."""
    return "HTTP_" + header.upper().replace("-", "_")


def caller_identity(api_key: ResolvedKey | None, request: HttpRequest) -> str:
    return key_identity(api_key.id) if api_key is not None else ip_identity(client_ip(request))


class _TierCache:
    """Anonymous tier by name, cached like keys (same TTL)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[Policy | None, float]] = {}

    def get(self, name: str) -> Policy | None:
        entry = self._entries.get(name)
        if entry is not None and time.monotonic() - entry[1] <= float(conf.SCALEOPS_THROTTLE_KEY_CACHE_TTL):
            return entry[0]
        from django_scaleops.ratelimit.models import Tier

        tier = Tier.objects.filter(name=name).first()
        policy = tier.policy() if tier is not None else None
        with self._lock:
            self._entries[name] = (policy, time.monotonic())
        return policy

    async def aget(self, name: str) -> Policy | None:
        entry = self._entries.get(name)
        if entry is not None and time.monotonic() - entry[1] <= float(conf.SCALEOPS_THROTTLE_KEY_CACHE_TTL):
            return entry[0]
        from django_scaleops.ratelimit.models import Tier

        tier = await Tier.objects.filter(name=name).afirst()
        policy = tier.policy() if tier is not None else None
        with self._lock:
            self._entries[name] = (policy, time.monotonic())
        return policy

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


tier_cache = _TierCache()


def anonymous_policy() -> Policy | None:
    name = conf.SCALEOPS_THROTTLE_ANONYMOUS_TIER
    return tier_cache.get(name) if name else None


async def aanonymous_policy() -> Policy | None:
    name = conf.SCALEOPS_THROTTLE_ANONYMOUS_TIER
    return await tier_cache.aget(name) if name else None
