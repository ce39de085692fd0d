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

    # ---- monitoring and HTTP (SCALEOPS_MONITOR_*, SCALEOPS_HTTP_*)

    # ---- PgBouncer (SCALEOPS_PGBOUNCER_*)

    SCALEOPS_PGBOUNCER_ALIASES: Setting[dict[str, dict[str, Any]]] = Setting(
        {},
        dict,
        "Database aliases that connect through PgBouncer, each mapped to its options "
        "(pool_mode, admin_url, direct, max_prepared_statements); see docs/pgbouncer.md.",
    )
    SCALEOPS_PGBOUNCER_MAX_WAIT_MS = Setting(
        100, int, "A client waiting this long (ms) for a server connection makes health degraded."
    )
    SCALEOPS_PGBOUNCER_MAX_WAIT_CRITICAL_MS = Setting(
        1000, int, "A client waiting this long (ms) for a server connection makes health unhealthy."
    )
    SCALEOPS_PGBOUNCER_UTILISATION_WARN = Setting(
        0.8, (int, float), "Share of a pool's server connections in use above which health is degraded."
    )
    SCALEOPS_PGBOUNCER_LEAK_SECONDS = Setting(
        30, (int, float), "A client holding a server connection this long (s) since its last query is a leak."
    )
    SCALEOPS_PGBOUNCER_CHURN_PER_MINUTE = Setting(
        60, (int, float), "New server sessions per minute above which health reports server churn."
    )
    SCALEOPS_PGBOUNCER_METRICS_TTL = Setting(
        5, (int, float), "Seconds the metrics endpoint reuses one reading of the admin console."
    )
    SCALEOPS_PGBOUNCER_CONNECT_TIMEOUT = Setting(
        3, int, "Seconds to wait for PgBouncer's admin console before reporting it unreachable."
    )
    SCALEOPS_PGBOUNCER_FORK_GUARD = Setting(
        True, bool, "Forget database connections and native pools inherited across os.fork()."
    )

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
