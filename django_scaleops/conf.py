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
    SCALEOPS_LOG_REQUEST_ID_HEADERS: Setting[Sequence[str]] = Setting(
        ("X-Request-ID", "X-Correlation-ID"),
        (list, tuple),
        "Request headers read, in order, for an incoming request ID.",
    )
    SCALEOPS_LOG_RESPONSE_HEADER = Setting("X-Request-ID", str, "Response header that echoes the request ID.")
    SCALEOPS_LOG_REQUESTS = Setting(True, bool, "Write one log line per request (logger django_scaleops.request).")
    SCALEOPS_LOG_REQUEST_LEVEL = Setting("INFO", str, "Level name of the per-request log line.")
    SCALEOPS_LOG_EXCLUDE_PATHS: Setting[Sequence[str]] = Setting(
        ("/health", "/metrics"), (list, tuple), "Path prefixes that get no request log line (health checks)."
    )
    SCALEOPS_LOG_MASK_EXTRA_KEYS: Setting[Sequence[str]] = Setting(
        (), (list, tuple), "More key substrings to mask, on top of password, token, secret, ..."
    )
    SCALEOPS_LOG_MASK_EXTRA_PATTERNS: Setting[Sequence[str]] = Setting(
        (), (list, tuple), "More value regexes to mask (whole match)."
    )
    SCALEOPS_APM_ENABLED: Setting[Sequence[str]] = Setting(
        (), (list, tuple), 'APM vendors to set up: "sentry", "datadog", both or none.'
    )
    SCALEOPS_APM_SERVICE = Setting("", str, "Service name for both vendors (empty: the settings module's package).")
    SCALEOPS_APM_ENV = Setting("", str, 'Environment (empty: "development" when DEBUG, else "production").')
    SCALEOPS_APM_VERSION = Setting("", str, "Release/version reported by both vendors.")
    SCALEOPS_APM_SENTRY_DSN = Setting("", str, "Sentry DSN (empty: Sentry stays off even when enabled).")
    SCALEOPS_APM_DATADOG_AGENT_URL = Setting("", str, "Datadog agent URL (empty: ddtrace's own default).")
    SCALEOPS_APM_SAMPLE_RATE: Setting[float | None] = Setting(
        None, (float, int, type(None)), "Share of requests traced, 0 to 1 (None: 1.0 when DEBUG, else 0.1)."
    )
    SCALEOPS_APM_EXCLUDE_PATHS: Setting[Sequence[str]] = Setting(
        ("/health", "/metrics"), (list, tuple), "Path prefixes never sampled by either vendor."
    )
    SCALEOPS_APM_MIDDLEWARE_SPANS = Setting(
        False, bool, "A span per middleware and signal (detailed, but costs each request)."
    )
    SCALEOPS_APM_SEND_PII = Setting(False, bool, "Let the vendors collect user IPs, cookies and user data.")

    # ---- read replicas (SCALEOPS_ROUTER_*)

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
