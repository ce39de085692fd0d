"""Every ``SCALEOPS_*`` setting, with its type and default, read lazily from Django settings.

Code reads settings only through ``conf``, so ``override_settings`` is always honoured::

    from django_scaleops.conf import conf
    conf.SCALEOPS_SLOW_QUERY_MS
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar, overload

from django.conf import settings

T = TypeVar("T")

PREFIX = "SCALEOPS_"


class Setting(Generic[T]):
    """One setting: its default, the types a value may have, and a line of documentation."""

    def __init__(self, default: T, types: type | tuple[type, ...], doc: str) -> None:
        self.default = default
        self.types = types
        self.doc = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> Setting[T]: ...
    @overload
    def __get__(self, instance: object, owner: type) -> T: ...
    def __get__(self, instance: object | None, owner: type) -> T | Setting[T]:
        if instance is None:
            return self
        value: T = getattr(settings, self.name, self.default)
        return value

    def is_valid(self, value: Any) -> bool:
        # bool is an int subclass; a number setting must not silently accept True.
        if isinstance(value, bool) and bool not in _as_tuple(self.types):
            return False
        return isinstance(value, self.types)


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


class Settings:
    """The settings of django-scaleops. Each area adds its own block below."""

    # Each capability declares its settings in its own block below (and in docs/settings.md):
    # NAME = Setting(default, types, "one line of documentation")

    # ---- logging and APM (SCALEOPS_LOG_*, SCALEOPS_APM_*)

    # ---- read replicas (SCALEOPS_ROUTER_*)

    # ---- partitioning (SCALEOPS_PARTITION_*)

    # ---- rate limiting (SCALEOPS_THROTTLE_*)
    SCALEOPS_THROTTLE_CACHE = Setting(
        "default", str, "Alias in CACHES of the django-redis cache whose Redis holds the buckets."
    )
    SCALEOPS_THROTTLE_REDIS_PREFIX = Setting("scaleops:rl", str, "Prefix of every Redis key the limiter writes.")
    SCALEOPS_THROTTLE_AUTH_SCHEME = Setting(
        "Api-Key", str, "Scheme of the Authorization header that carries a key: 'Authorization: Api-Key <key>'."
    )
    SCALEOPS_THROTTLE_KEY_HEADER: Setting[str | None] = Setting(
        "X-API-Key", (str, type(None)), "Second header that may carry the key (None to accept only Authorization)."
    )
    SCALEOPS_THROTTLE_KEY_FUNC: Setting[str | None] = Setting(
        None,
        (str, type(None)),
        "Dotted path of a callable(request) -> raw key or None, replacing the header lookup.",
    )
    SCALEOPS_THROTTLE_ANONYMOUS_TIER: Setting[str | None] = Setting(
        None, (str, type(None)), "Name of the tier that limits callers without a key, by client IP (None: no limit)."
    )
    SCALEOPS_THROTTLE_PROXY_COUNT = Setting(
        0,
        int,
        "Trusted proxies in front of Django: 0 uses REMOTE_ADDR, n the n-th X-Forwarded-For entry from the right.",
    )
    SCALEOPS_THROTTLE_EXEMPT_PATHS: Setting[Sequence[str]] = Setting(
        (), (list, tuple), "Path prefixes the limiter ignores entirely (health checks, admin, static)."
    )
    SCALEOPS_THROTTLE_PATH_RATES: Setting[dict[str, str]] = Setting(
        {}, dict, "Path prefix -> rate such as '20/m' or '20/m burst 5': a separate bucket for that path, per caller."
    )
    SCALEOPS_THROTTLE_KEY_CACHE_TTL = Setting(
        30.0, (int, float), "Seconds a resolved API key (and its tier) stays in the in-process cache."
    )
    SCALEOPS_THROTTLE_BREAKER_COOLDOWN = Setting(
        2.0, (int, float), "Seconds the limiter stops calling Redis after a Redis error before trying it again."
    )
    SCALEOPS_THROTTLE_LOCAL_INSTANCES = Setting(
        1,
        int,
        "Number of app instances; a tier in 'local' mode allows limit/instances per instance while Redis is down.",
    )
    SCALEOPS_THROTTLE_GITHUB_HEADERS = Setting(
        False, bool, "Also send X-RateLimit-Limit, X-RateLimit-Remaining and X-RateLimit-Reset."
    )
    SCALEOPS_THROTTLE_USAGE_TTL = Setting(
        172800, int, "Seconds per-minute usage counters stay in Redis before the rollup must have read them."
    )

    # ---- bulk operations (SCALEOPS_BULK_*)

    # ---- cache (SCALEOPS_CACHE_*)

    # ---- monitoring and HTTP (SCALEOPS_MONITOR_*, SCALEOPS_HTTP_*)

    # ---- PgBouncer (SCALEOPS_PGBOUNCER_*)

    @classmethod
    def declared(cls) -> dict[str, Setting[Any]]:
        """Every declared setting by name."""
        return {
            name: value
            for klass in reversed(cls.__mro__)
            for name, value in vars(klass).items()
            if isinstance(value, Setting)
        }


conf = Settings()
