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
    SCALEOPS_BULK_BATCH_SIZE = Setting(1000, int, "Rows per batch (and per transaction) when batch_size is not given.")
    SCALEOPS_BULK_MAX_RETRIES = Setting(
        3, int, "Retries of a batch after a serialization failure or deadlock when max_retries is not given."
    )
    SCALEOPS_BULK_TEMP_TABLE_ROWS = Setting(
        100,
        int,
        "Batches larger than this go through a COPY'd temp table for upserts, RETURNING and updates;"
        " smaller ones use a VALUES list.",
    )

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
