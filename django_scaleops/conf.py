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
    SCALEOPS_PARTITION_MODELS = Setting[dict[str, dict[str, object]]](
        {}, dict, "Per-model partitioning overrides: {'app.Model': {'retention': 12, 'premake': 3, ...}}."
    )
    SCALEOPS_PARTITION_PREMAKE = Setting(3, int, "Partitions created ahead of the current one, unless a model says.")
    SCALEOPS_PARTITION_LOCK_TIMEOUT_MS = Setting(
        1000, int, "lock_timeout of each partition DDL step; a busy lock is retried rather than waited on."
    )
    SCALEOPS_PARTITION_LOCK_RETRIES = Setting(5, int, "Retries of a DDL step whose lock stayed busy.")
    SCALEOPS_PARTITION_BATCH_SIZE = Setting(10_000, int, "Rows moved per committed batch out of a default partition.")
    SCALEOPS_PARTITION_ARCHIVE_STORAGE = Setting(
        "default", str, "Alias in STORAGES that receives partition archives (FileSystemStorage by default)."
    )
    SCALEOPS_PARTITION_ARCHIVE_PREFIX = Setting("scaleops-archive", str, "Folder of the archives in that storage.")

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
