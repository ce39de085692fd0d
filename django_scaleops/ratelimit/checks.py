"""System checks of the rate limiter (IDs scaleops.E2xx / W2xx).

Counts, sizes and times are declared with their ranges in conf and checked by
django_scaleops.checks.check_settings; here, the cache, the middleware, rates and the key function.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.utils.module_loading import import_string

from django_scaleops.checks import middleware_paths, redis_cache_problem
from django_scaleops.conf import conf
from django_scaleops.ratelimit.policy import parse_rate

MIDDLEWARE_PATH = "django_scaleops.ratelimit.middleware.ApiKeyThrottleMiddleware"

# Backends that cannot hold a shared, atomic bucket.
NOT_SHARED = {
    "django.core.cache.backends.locmem.LocMemCache": "is per process",
    "django.core.cache.backends.dummy.DummyCache": "stores nothing",
    "django.core.cache.backends.filebased.FileBasedCache": "cannot run the atomic script",
    "django.core.cache.backends.db.DatabaseCache": "cannot run the atomic script",
    "django.core.cache.backends.memcached.PyMemcacheCache": "cannot run the atomic script",
    "django.core.cache.backends.memcached.PyLibMCCache": "cannot run the atomic script",
    "django.core.cache.backends.redis.RedisCache": "is Django's own Redis backend; the limiter uses django-redis",
}
DRF_THROTTLE_PATH = "django_scaleops.ratelimit.drf.ApiKeyTierThrottle"
MAX_SOCKET_TIMEOUT = 1.0
# Middleware whose work a refused request should not pay for.
EXPENSIVE_BEFORE = (
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
)


def check_throttle_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    middleware = middleware_paths()
    drf_throttle = DRF_THROTTLE_PATH in _drf_throttle_classes()
    installed = MIDDLEWARE_PATH in middleware or drf_throttle
    alias = conf.SCALEOPS_THROTTLE_CACHE_ALIAS
    caches = getattr(settings, "CACHES", {})
    problem = redis_cache_problem(alias)
    if not installed and problem is not None:
        messages.append(
            Warning(
                f"API-key rate limiting needs a django-redis cache, but {problem} (SCALEOPS_THROTTLE_CACHE_ALIAS). "
                "Tiers and keys can be managed in the admin; nothing is limited until the cache is set.",
                hint=f"Add a django_redis.cache.RedisCache as CACHES[{alias!r}] (or point"
                " SCALEOPS_THROTTLE_CACHE_ALIAS at one) before adding ApiKeyThrottleMiddleware or ApiKeyTierThrottle.",
                id="scaleops.W203",
            )
        )
    if installed and alias not in caches:
        messages.append(
            Error(
                f"SCALEOPS_THROTTLE_CACHE_ALIAS names the cache {alias!r}, which is not in CACHES.",
                hint=f"Add a django-redis cache {alias!r} to CACHES or point SCALEOPS_THROTTLE_CACHE_ALIAS at one.",
                id="scaleops.E201",
            )
        )
    elif installed:
        backend = caches[alias].get("BACKEND", "")
        if backend in NOT_SHARED or not backend.startswith("django_redis."):
            why = NOT_SHARED.get(backend, "is not django-redis")
            messages.append(
                Error(
                    f"The throttle cache {alias!r} uses {backend!r}, which {why}: limits would not be shared or exact.",
                    hint="Use django_redis.cache.RedisCache (a shared Redis 6.2+) for SCALEOPS_THROTTLE_CACHE_ALIAS.",
                    id="scaleops.E202",
                )
            )
    if installed and str(caches.get(alias, {}).get("BACKEND", "")).startswith("django_redis."):
        options = caches[alias].get("OPTIONS", {})
        slow = [
            name
            for name in ("SOCKET_CONNECT_TIMEOUT", "SOCKET_TIMEOUT")
            if not isinstance(options.get(name), int | float) or options[name] > MAX_SOCKET_TIMEOUT
        ]
        if slow:
            messages.append(
                Warning(
                    f"The throttle cache {alias!r} has no short {' / '.join(slow)}: a hung Redis would hold "
                    "each request that probes it for the full timeout.",
                    hint=f"Set {', '.join(slow)} to at most {MAX_SOCKET_TIMEOUT} s (e.g. 0.25) in its OPTIONS.",
                    id="scaleops.W202",
                )
            )
    if middleware.count(MIDDLEWARE_PATH) > 1:
        messages.append(
            Error(
                "ApiKeyThrottleMiddleware is listed more than once in MIDDLEWARE: each request would be counted twice.",
                hint="Keep a single entry.",
                id="scaleops.E203",
            )
        )
    if MIDDLEWARE_PATH in middleware:
        position = middleware.index(MIDDLEWARE_PATH)
        late = [name for name in EXPENSIVE_BEFORE if name in middleware[:position]]
        if late:
            messages.append(
                Warning(
                    f"ApiKeyThrottleMiddleware comes after {', '.join(late)}: refused requests still pay for them.",
                    hint="Move it near the top of MIDDLEWARE, after SecurityMiddleware and the correlation-id one.",
                    id="scaleops.W201",
                )
            )
    for prefix, rate in dict(conf.SCALEOPS_THROTTLE_PATH_RATES).items():
        try:
            parse_rate(rate, name=str(prefix))
        except (ValueError, TypeError) as exc:
            messages.append(
                Error(
                    f"SCALEOPS_THROTTLE_PATH_RATES[{prefix!r}]: {exc}.",
                    hint="Use a rate such as '20/m', '100/30s' or '20/m burst 5'.",
                    id="scaleops.E204",
                )
            )
    func = conf.SCALEOPS_THROTTLE_KEY_FUNC
    if isinstance(func, str) and func:
        try:
            import_string(func)
        except ImportError as exc:
            messages.append(
                Error(
                    f"SCALEOPS_THROTTLE_KEY_FUNC {func!r} cannot be imported: {exc}.",
                    hint="Give the dotted path of a callable(request) -> str | None.",
                    id="scaleops.E205",
                )
            )
    for name in ("SCALEOPS_THROTTLE_AUTH_FAILURE_RATE", "SCALEOPS_THROTTLE_STATUS_RATE"):
        rate = getattr(conf, name)
        if rate is None:
            continue
        try:
            parse_rate(rate, name=name)
        except (ValueError, TypeError) as exc:
            messages.append(
                Error(
                    f"{name}: {exc}; it is ignored (no limit) until fixed.",
                    hint="Use a rate such as '20/m', '100/30s' or '20/m burst 5', or None for no limit.",
                    id="scaleops.E209",
                )
            )
    return messages


def _drf_throttle_classes() -> list[str]:
    framework = getattr(settings, "REST_FRAMEWORK", None)
    classes = framework.get("DEFAULT_THROTTLE_CLASSES", ()) if isinstance(framework, dict) else ()
    return [c if isinstance(c, str) else f"{c.__module__}.{c.__qualname__}" for c in classes]


def check_tiers(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Tier rows are valid and the anonymous tier exists; needs the database, so only with --database."""
    if not databases or "default" not in databases:
        return []
    from django.db import connections

    from django_scaleops.ratelimit.models import Tier

    # `migrate` runs the database checks before it creates the tables.
    if Tier._meta.db_table not in connections["default"].introspection.table_names():
        return []

    messages: list[CheckMessage] = []
    for tier in Tier.objects.all():
        problem = tier.problem()
        if problem is not None:
            mode = tier.policy().failure_mode
            messages.append(
                Error(
                    f"Tier {tier.name!r} is invalid: {problem}. Until it is fixed, its requests get its "
                    f"failure mode {mode!r} (as if Redis were down).",
                    hint="Fix it in the Django admin (which validates it); QuerySet.update() and raw SQL do not.",
                    id="scaleops.E207",
                )
            )
    anonymous = conf.SCALEOPS_THROTTLE_ANONYMOUS_TIER
    if anonymous and not Tier.objects.filter(name=anonymous).exists():
        messages.append(
            Error(
                f"SCALEOPS_THROTTLE_ANONYMOUS_TIER names the tier {anonymous!r}, which does not exist.",
                hint="Create it in the Django admin or set the setting to an existing tier name (or None).",
                id="scaleops.E208",
            )
        )
    return messages
