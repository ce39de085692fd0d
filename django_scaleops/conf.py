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
    SCALEOPS_ROUTER_PRIMARY_ALIAS = Setting("default", str, "Database alias of the primary; every write goes there.")
    SCALEOPS_ROUTER_REPLICA_ALIASES: Setting[list[str] | tuple[str, ...]] = Setting(
        [], (list, tuple), "Database aliases of the streaming replicas that serve reads."
    )
    SCALEOPS_ROUTER_CHECK_INTERVAL: Setting[int | float] = Setting(
        30.0, (int, float), "Seconds between replica health checks (jittered by +/-20%)."
    )
    SCALEOPS_ROUTER_CHECK_TIMEOUT: Setting[int | float] = Setting(
        2.0, (int, float), "Seconds a health check may take to connect and to run its query."
    )
    SCALEOPS_ROUTER_MAX_LAG_SECONDS: Setting[int | float] = Setting(
        10.0, (int, float), "Replay lag in seconds over which (with the byte limit) a replica is lagging."
    )
    SCALEOPS_ROUTER_MAX_LAG_BYTES = Setting(
        1024 * 1024, int, "WAL bytes behind the primary over which (with the time limit) a replica is lagging."
    )
    SCALEOPS_ROUTER_READMIT_CHECKS = Setting(
        3, int, "Consecutive good health checks before a down or lagging replica serves reads again."
    )
    SCALEOPS_ROUTER_PIN_SECONDS: Setting[int | float] = Setting(
        5.0, (int, float), "Safety net: seconds reads stay on the primary when a write's WAL position is unknown."
    )
    SCALEOPS_ROUTER_COOKIE_NAME = Setting("scaleops_rw", str, "Name of the signed read-your-writes cookie.")
    SCALEOPS_ROUTER_COOKIE_MAX_AGE = Setting(
        300, int, "Seconds a client's last write position is carried across requests."
    )

    # ---- partitioning (SCALEOPS_PARTITION_*)

    # ---- rate limiting (SCALEOPS_THROTTLE_*)

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
