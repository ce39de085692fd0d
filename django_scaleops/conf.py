"""Every ``SCALEOPS_*`` setting, with its type and default, read lazily from Django settings.

Code reads settings only through ``conf``, so ``override_settings`` is always honoured::

    from django_scaleops.conf import conf
    conf.SCALEOPS_SLOW_QUERY_MS
"""

from __future__ import annotations

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

    # ---- bulk operations (SCALEOPS_BULK_*)

    # ---- cache (SCALEOPS_CACHE_*)
    SCALEOPS_CACHE_ENABLED = Setting(
        True, bool, "Use the Redis cache; False reads the database and invalidates nothing (no Redis call per write)."
    )
    SCALEOPS_CACHE_ALIAS = Setting("default", str, "The CACHES alias (a django-redis backend) holding cached results.")
    SCALEOPS_CACHE_PREFIX = Setting("scaleops", str, "Namespace of every cache, stamp and lease key.")
    SCALEOPS_CACHE_DEFAULT_TIMEOUT = Setting(300, int, "Seconds a cached result stays fresh when no timeout is given.")
    SCALEOPS_CACHE_STALE_GRACE = Setting(
        30, int, "Seconds past its timeout a result may still be served while one caller refreshes it."
    )
    SCALEOPS_CACHE_LEASE_TIMEOUT_MS = Setting(
        5000, int, "Milliseconds a refresh lease lives (the longest fetch it covers)."
    )
    SCALEOPS_CACHE_LEASE_WAIT_MS = Setting(
        2000, int, "Milliseconds a caller waits for another's fetch before reading the database itself."
    )
    SCALEOPS_CACHE_XFETCH_BETA = Setting(
        1.0, (int, float), "XFetch early-refresh eagerness; 0 turns early refresh off."
    )
    SCALEOPS_CACHE_L1_TIMEOUT = Setting(
        0.0, (int, float), "Seconds results stay in the in-process L1 tier; 0 turns L1 off."
    )
    SCALEOPS_CACHE_L1_MAX_ENTRIES = Setting(
        10_000, int, "Entries the in-process L1 tier holds before evicting the oldest."
    )
    SCALEOPS_CACHE_RETRY_AFTER = Setting(
        2.0, (int, float), "Seconds to read the database directly after Redis fails, before trying it again."
    )
    SCALEOPS_CACHE_STATS_FLUSH_SECONDS = Setting(
        10.0, (int, float), "Seconds between flushes of statistics deltas to Redis (cluster totals); 0 turns it off."
    )
    SCALEOPS_CACHE_DEPENDENCIES: Setting[dict[str, list[str]]] = Setting(
        {}, dict, 'Cascades: {"app.Model": ["app.Other"]} also invalidates Other when Model changes.'
    )
    SCALEOPS_CACHE_FILL_USING: Setting[str | None] = Setting(
        None, (str, type(None)), "Database alias cached querysets are filled from on a miss (None: the router decides)."
    )
    SCALEOPS_CACHE_FRESHNESS_HOOK: Setting[str | None] = Setting(
        None, (str, type(None)), "Dotted path of a callable(tables, using) -> bool; True bypasses the cache."
    )

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
