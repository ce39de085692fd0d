"""Every ``SCALEOPS_*`` setting, with its type, default and limits, read lazily from Django settings.

Code reads settings only through ``conf``, so ``override_settings`` is always honoured::

    from django_scaleops.conf import conf
    conf.SCALEOPS_MONITOR_SLOW_QUERY_MS

A setting declares what a valid value is (types, ``min``/``max``/``above``/``below``, ``choices``,
``items``/``item_choices`` for lists); one system check reports every invalid value
(django_scaleops.checks.check_settings) and, at run time, an invalid value reads as the default.
A renamed setting lists its ``old_names``, which are read when the new name is not set.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, overload

from django.conf import settings
from django.core.signals import setting_changed

logger = logging.getLogger("django_scaleops.conf")

# Resolved values by setting name. Django's settings object raises and catches AttributeError on
# every read of a setting the project leaves unset (a few µs each), and the request path reads a
# dozen of ours; values change only through override_settings, which sends setting_changed.
_resolved: dict[str, Any] = {}


def _forget_resolved(**kwargs: Any) -> None:
    _resolved.clear()


setting_changed.connect(_forget_resolved, dispatch_uid="django_scaleops.conf.resolved")


def _forward_old_name(*, setting: str, **kwargs: Any) -> None:
    # Receivers that follow a setting by its (new) name, e.g. the query monitor's, must also hear
    # override_settings of its old name.
    new = Settings.renamed().get(setting)
    if new is not None:
        setting_changed.send(
            sender=kwargs.get("sender"), setting=new, value=kwargs.get("value"), enter=kwargs.get("enter")
        )


setting_changed.connect(_forward_old_name, dispatch_uid="django_scaleops.conf.old_names")

T = TypeVar("T")

PREFIX = "SCALEOPS_"
_UNSET: Any = object()


@dataclass(frozen=True)
class Fault:
    """What is wrong with a value: ``kind`` decides the check ID, ``text`` follows the setting's name."""

    kind: Literal["type", "range", "choice"]
    text: str


class Setting(Generic[T]):
    """One setting: its default, the types a value may have, a line of documentation and its limits.

    ``min``/``max`` are inclusive and ``above``/``below`` exclusive bounds of a number; ``choices``
    the values a scalar may take; ``items`` the types and ``item_choices`` the values of each
    element of a list setting; ``old_names`` the names it had before (read when it is not set).
    """

    def __init__(
        self,
        default: T,
        types: type | tuple[type, ...],
        doc: str,
        *,
        min: float | None = None,
        max: float | None = None,
        above: float | None = None,
        below: float | None = None,
        choices: Sequence[object] | None = None,
        items: type | tuple[type, ...] | None = None,
        item_choices: Sequence[object] | None = None,
        old_names: Sequence[str] = (),
    ) -> None:
        self.default = default
        self.types = types
        self.doc = doc
        self.min, self.max, self.above, self.below = min, max, above, below
        self.choices = tuple(choices) if choices is not None else None
        self.items = items
        self.item_choices = tuple(item_choices) if item_choices is not None else None
        self.old_names = tuple(old_names)
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
        try:
            resolved: T = _resolved[self.name]
            return resolved
        except KeyError:
            pass
        source, value = self.lookup()
        fault = self.fault(value)
        if fault is not None:
            # Reported by checks scaleops.E001-E003 (which stop runserver and migrate); at run
            # time the documented default is safer than a crash or a nonsense value deep inside.
            _warn_invalid(source, fault, value, self.default)
            value = self.default
        _resolved[self.name] = value
        valid: T = value
        return valid

    def lookup(self) -> tuple[str, Any]:
        """The name the project set (this one first, then an old name) and its value, or the default."""
        for name in (self.name, *self.old_names):
            value = getattr(settings, name, _UNSET)
            if value is not _UNSET:
                return name, value
        return self.name, self.default

    def fault(self, value: Any) -> Fault | None:
        """What is wrong with ``value`` for this setting, or None when it is valid."""
        if not _is_instance(value, self.types):
            return Fault("type", f"must be {self.expected()}, not {type(value).__name__} ({value!r})")
        if self.items is not None and isinstance(value, (list, tuple)):
            for item in value:
                if not _is_instance(item, self.items):
                    return Fault(
                        "type", f"must be {self.expected()}, not {value!r} ({item!r} is {type(item).__name__})"
                    )
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not self.in_range(value):
            return Fault("range", f"must be {self.range_text()}, not {value!r}")
        if self.choices is not None and value not in self.choices:
            return Fault("choice", f"must be one of {_listed(self.choices)}, not {value!r}")
        if self.item_choices is not None and isinstance(value, (list, tuple)):
            unknown = [item for item in value if item not in self.item_choices]
            if unknown:
                return Fault(
                    "choice",
                    f"must list only {_listed(self.item_choices)}, not {value!r} (unknown: {_listed(unknown)})",
                )
        return None

    def is_valid(self, value: Any) -> bool:
        return self.fault(value) is None

    def in_range(self, value: float) -> bool:
        return (
            (self.min is None or value >= self.min)
            and (self.max is None or value <= self.max)
            and (self.above is None or value > self.above)
            and (self.below is None or value < self.below)
        )

    def expected(self) -> str:
        """The types in words: "int or float", "list or tuple of str"."""
        types = _as_tuple(self.types)
        if self.items is None:
            return " or ".join(map(_type_name, types))
        sequences = " or ".join(_type_name(t) for t in types if t in (list, tuple))
        others = [_type_name(t) for t in types if t not in (list, tuple)]
        return " or ".join([f"{sequences} of {' or '.join(map(_type_name, _as_tuple(self.items)))}", *others])

    def range_text(self) -> str:
        """The bounds in words ("at least 1", "above 0 and below 1", "from 0 to 1"), or ""."""
        if self.min is not None and self.max is not None:
            bounds = [f"from {self.min!r} to {self.max!r}"]
        else:
            bounds = [f"at least {self.min!r}"] if self.min is not None else []
            bounds += [f"at most {self.max!r}"] if self.max is not None else []
        bounds += [f"above {self.above!r}"] if self.above is not None else []
        bounds += [f"below {self.below!r}"] if self.below is not None else []
        return " and ".join(bounds)

    def limits(self) -> str:
        """Every limit in words, as docs/settings.md shows it (empty when the type is all there is)."""
        parts = [self.range_text()] if self.range_text() else []
        if self.choices is not None:
            parts.append(f"one of {_listed(self.choices)}")
        if self.item_choices is not None:
            parts.append(f"each one of {_listed(self.item_choices)}")
        return "; ".join(parts)


_warned: set[str] = set()


def _warn_invalid(name: str, fault: Fault, value: Any, default: Any) -> None:
    if name in _warned:
        return
    _warned.add(name)
    if fault.kind == "type":
        # The type, not the value: a mistyped secret (a token as bytes) would end up in the logs.
        logger.warning("%s has a value of the wrong type (%s); using its default", name, type(value).__name__)
    else:
        logger.warning("%s %s; using its default %r", name, fault.text, default)


def _is_instance(value: Any, types: type | tuple[type, ...]) -> bool:
    # bool is an int subclass; a number setting must not silently accept True.
    if isinstance(value, bool) and bool not in _as_tuple(types):
        return False
    return isinstance(value, types)


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _type_name(kind: type) -> str:
    return "None" if kind is type(None) else kind.__name__


def _listed(values: Sequence[object]) -> str:
    return ", ".join(map(repr, values))


class Settings:
    """The settings of django-scaleops. Each area adds its own block below."""

    # Each capability declares its settings in its own block below (and in docs/settings.md):
    # NAME = Setting(default, types, "one line of documentation", min=..., choices=..., ...)
    # Names are SCALEOPS_<AREA>_<NAME>; a CACHES alias is <AREA>_CACHE_ALIAS (the cache's own is
    # SCALEOPS_CACHE_ALIAS). A rename keeps the old name working: old_names=("SCALEOPS_OLD",).

    # ---- logging and APM (SCALEOPS_LOG_*, SCALEOPS_APM_*)
    SCALEOPS_LOG_REQUEST_ID_HEADERS: Setting[Sequence[str]] = Setting(
        ("X-Request-ID", "X-Correlation-ID"),
        (list, tuple),
        "Request headers read, in order, for an incoming request ID.",
        items=str,
    )
    SCALEOPS_LOG_RESPONSE_HEADER = Setting("X-Request-ID", str, "Response header that echoes the request ID.")
    SCALEOPS_LOG_REQUESTS = Setting(True, bool, "Write one log line per request (logger django_scaleops.request).")
    SCALEOPS_LOG_REQUEST_LEVEL = Setting("INFO", str, "Level name of the per-request log line.")
    SCALEOPS_LOG_EXCLUDE_PATHS: Setting[Sequence[str]] = Setting(
        ("/health", "/metrics"), (list, tuple), "Path prefixes that get no request log line (health checks).", items=str
    )
    SCALEOPS_LOG_MASK_EXTRA_KEYS: Setting[Sequence[str]] = Setting(
        (), (list, tuple), "More key substrings to mask, on top of password, token, secret, ...", items=str
    )
    SCALEOPS_LOG_MASK_EXTRA_PATTERNS: Setting[Sequence[str]] = Setting(
        (), (list, tuple), "More value regexes to mask (whole match).", items=str
    )
    SCALEOPS_APM_ENABLED: Setting[Sequence[str]] = Setting(
        (),
        (list, tuple),
        'APM vendors to set up: "sentry", "datadog", both or none.',
        items=str,
        item_choices=("sentry", "datadog"),
    )
    SCALEOPS_APM_SERVICE = Setting("", str, "Service name for both vendors (empty: the settings module's package).")
    SCALEOPS_APM_ENV = Setting("", str, 'Environment (empty: "development" when DEBUG, else "production").')
    SCALEOPS_APM_VERSION = Setting("", str, "Release/version reported by both vendors.")
    SCALEOPS_APM_SENTRY_DSN = Setting("", str, "Sentry DSN (empty: Sentry stays off even when enabled).")
    SCALEOPS_APM_DATADOG_AGENT_URL = Setting("", str, "Datadog agent URL (empty: ddtrace's own default).")
    SCALEOPS_APM_SAMPLE_RATE: Setting[float | None] = Setting(
        None,
        (float, int, type(None)),
        "Share of requests traced, 0 to 1 (None: 1.0 when DEBUG, else 0.1).",
        min=0,
        max=1,
    )
    SCALEOPS_APM_SAMPLING_SECRET: Setting[str | None] = Setting(
        None,
        (str, type(None)),
        "Key of the keep/drop hash, the same in every service that shares request IDs (None: derived from SECRET_KEY).",
    )
    SCALEOPS_APM_EXCLUDE_PATHS: Setting[Sequence[str]] = Setting(
        ("/health", "/metrics"), (list, tuple), "Path prefixes never sampled by either vendor.", items=str
    )
    SCALEOPS_APM_REQUEST_TRACING = Setting(
        "sampled",
        str,
        '"sampled": only kept requests are instrumented, by us; "vendor": the vendors\' own Django and'
        " psycopg integrations on every request.",
        choices=("sampled", "vendor"),
    )
    SCALEOPS_APM_MIDDLEWARE_SPANS = Setting(
        False, bool, 'A span per middleware and signal (detailed, but costs each request); "vendor" tracing only.'
    )
    SCALEOPS_APM_SEND_PII = Setting(False, bool, "Let the vendors collect user IPs, cookies and user data.")

    # ---- read replicas (SCALEOPS_ROUTER_*)
    SCALEOPS_ROUTER_PRIMARY_ALIAS = Setting("default", str, "Database alias of the primary; every write goes there.")
    SCALEOPS_ROUTER_REPLICA_ALIASES: Setting[list[str] | tuple[str, ...]] = Setting(
        [], (list, tuple), "Database aliases of the streaming replicas that serve reads.", items=str
    )
    SCALEOPS_ROUTER_REPLICA_WEIGHTS = Setting[dict[str, int]](
        {},
        dict,
        "Share of reads per replica alias for weighted round robin ({'replica': 1, 'replica2': 3});"
        " unlisted replicas weigh 1; 0 only when no other replica can serve.",
    )
    SCALEOPS_ROUTER_CHECK_INTERVAL: Setting[int | float] = Setting(
        30.0, (int, float), "Seconds between replica health checks (jittered by +/-20%).", min=0.01
    )
    SCALEOPS_ROUTER_HEALTH_CACHE_ALIAS: Setting[str | None] = Setting(
        None,
        (str, type(None)),
        "CACHES alias (shared by the workers, e.g. Redis) through which one process checks the replicas"
        " for all; None: each process checks alone.",
    )
    SCALEOPS_ROUTER_SHARED_CHECK_INTERVAL: Setting[int | float] = Setting(
        2.0,
        (int, float),
        "Seconds between replica checks (by the lease holder) and snapshot reads (by the others) with shared health.",
        min=0.01,
    )
    SCALEOPS_ROUTER_CHECK_TIMEOUT: Setting[int | float] = Setting(
        2.0, (int, float), "Seconds a health check may take to connect and to run its query.", min=0.1
    )
    SCALEOPS_ROUTER_MAX_LAG_SECONDS: Setting[int | float] = Setting(
        10.0, (int, float), "Replay lag in seconds over which (with the byte limit) a replica is lagging.", min=0
    )
    SCALEOPS_ROUTER_MAX_LAG_BYTES = Setting(
        1024 * 1024, int, "WAL bytes behind the primary over which (with the time limit) a replica is lagging.", min=0
    )
    SCALEOPS_ROUTER_READMIT_CHECKS = Setting(
        3, int, "Consecutive good health checks before a down or lagging replica serves reads again.", min=1
    )
    SCALEOPS_ROUTER_PIN_SECONDS: Setting[int | float] = Setting(
        5.0,
        (int, float),
        "Safety net: seconds reads stay on the primary when a write's WAL position is unknown.",
        min=0,
    )
    SCALEOPS_ROUTER_COOKIE_NAME = Setting("scaleops_rw", str, "Name of the signed read-your-writes cookie.")
    SCALEOPS_ROUTER_COOKIE_MAX_AGE = Setting(
        300, int, "Seconds a client's last write position is carried across requests.", min=1
    )

    # ---- partitioning (SCALEOPS_PARTITION_*)
    SCALEOPS_PARTITION_MODELS = Setting[dict[str, dict[str, object]]](
        {}, dict, "Per-model partitioning overrides: {'app.Model': {'retention': 12, 'premake': 3, ...}}."
    )
    SCALEOPS_PARTITION_PREMAKE = Setting(
        3, int, "Partitions created ahead of the current one, unless a model says.", min=0
    )
    SCALEOPS_PARTITION_LOCK_TIMEOUT_MS = Setting(
        1000, int, "lock_timeout of each partition DDL step; a busy lock is retried rather than waited on.", min=1
    )
    SCALEOPS_PARTITION_LOCK_RETRIES = Setting(5, int, "Retries of a DDL step whose lock stayed busy.", min=0)
    SCALEOPS_PARTITION_BATCH_SIZE = Setting(
        10_000, int, "Rows moved per committed batch out of a default partition.", min=1
    )
    SCALEOPS_PARTITION_ARCHIVE_STORAGE = Setting(
        "default", str, "Alias in STORAGES that receives partition archives (FileSystemStorage by default)."
    )
    SCALEOPS_PARTITION_ARCHIVE_PREFIX = Setting("scaleops-archive", str, "Folder of the archives in that storage.")

    # ---- rate limiting (SCALEOPS_THROTTLE_*)
    SCALEOPS_THROTTLE_CACHE_ALIAS = Setting(
        "default",
        str,
        "Alias in CACHES of the django-redis cache whose Redis holds the buckets.",
        old_names=("SCALEOPS_THROTTLE_CACHE",),
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
        min=0,
    )
    SCALEOPS_THROTTLE_EXEMPT_PATHS: Setting[Sequence[str]] = Setting(
        (), (list, tuple), "Path prefixes the limiter ignores entirely (health checks, admin, static).", items=str
    )
    SCALEOPS_THROTTLE_PATH_RATES: Setting[dict[str, str]] = Setting(
        {}, dict, "Path prefix -> rate such as '20/m' or '20/m burst 5': a separate bucket for that path, per caller."
    )
    SCALEOPS_THROTTLE_KEY_CACHE_TTL = Setting(
        30.0, (int, float), "Seconds a resolved API key (and its tier) stays in the in-process cache.", min=0
    )
    SCALEOPS_THROTTLE_KEY_CACHE_SIZE = Setting(
        50_000,
        int,
        "Most API keys the in-process cache holds, least recently used dropped first; unknown prefixes"
        " are kept apart and never push a key out.",
        min=1,
    )
    SCALEOPS_THROTTLE_NEGATIVE_CACHE_TTL = Setting(
        60.0,
        (int, float),
        "Seconds a well-formed key prefix without a row is remembered (in process and in Redis), so"
        " repeating it queries no database.",
        above=0,
    )
    SCALEOPS_THROTTLE_NEGATIVE_CACHE_SIZE = Setting(
        65_536,
        int,
        "Most unknown key prefixes the shared negative cache holds in Redis (shards of at most 128 under"
        " '<REDIS_PREFIX>:nk:'; about 2 MB at the default); 0 turns it off.",
        min=0,
    )
    SCALEOPS_THROTTLE_AUTH_FAILURE_RATE: Setting[str | None] = Setting(
        "20/m",
        (str, type(None)),
        "Failed API-key authentications allowed per client address, as a rate ('20/m'); beyond it 429"
        " with Retry-After and no key lookup. None: no limit.",
    )
    SCALEOPS_THROTTLE_STATUS_RATE: Setting[str | None] = Setting(
        "60/m",
        (str, type(None)),
        "Requests each key may send to the rate-limit status endpoint, as a rate (its own bucket, not the"
        " tier's quota). None: no limit.",
    )
    SCALEOPS_THROTTLE_BREAKER_COOLDOWN = Setting(
        2.0, (int, float), "Seconds the limiter stops calling Redis after a Redis error before trying it again.", min=0
    )
    SCALEOPS_THROTTLE_LOCAL_INSTANCES = Setting(
        1,
        int,
        "Number of app instances; a tier in 'local' mode allows limit/instances per instance while Redis is down.",
        min=1,
    )
    SCALEOPS_THROTTLE_GITHUB_HEADERS = Setting(
        False, bool, "Also send X-RateLimit-Limit, X-RateLimit-Remaining and X-RateLimit-Reset."
    )
    SCALEOPS_THROTTLE_LEASE_MAX = Setting(
        32,
        int,
        "Requests one check may take ahead from a key's bucket, for this process to admit without Redis"
        " (at most 0.1% of the key's limit + burst; 0 = every request asks Redis).",
        min=0,
    )
    SCALEOPS_THROTTLE_LEASE_SECONDS = Setting(
        1.0, (int, float), "Seconds a process may admit from requests it took ahead; unused ones go back.", above=0
    )
    SCALEOPS_THROTTLE_USAGE_TTL = Setting(
        172800, int, "Seconds per-minute usage counters stay in Redis before the rollup must have read them.", min=1
    )
    SCALEOPS_THROTTLE_ROLLUP_LOCK_TTL = Setting(
        60,
        int,
        "Seconds the usage rollup's Redis lock outlives a run that stopped renewing it (crashed), before"
        " another run may take it.",
        min=1,
    )

    # ---- bulk operations (SCALEOPS_BULK_*)
    SCALEOPS_BULK_BATCH_SIZE = Setting(
        1000,
        int,
        "Rows per batch (and per transaction) of updates, deletes and processing without a batch_size.",
        min=1,
    )
    # COPY rows cost the server little, so batch_create's batches are larger: fewer round trips and
    # savepoints, and a 5,000-row batch still commits in tens of milliseconds.
    SCALEOPS_BULK_CREATE_BATCH_SIZE = Setting(
        5000, int, "Rows per batch_create batch when batch_size is not given.", min=1
    )
    SCALEOPS_BULK_FREEZE_GC = Setting(
        True,
        bool,
        "While a bulk operation runs, leave the objects that existed before it out of the garbage collector's"
        " passes (gc.freeze), which rescan them as batches of rows are held (docs/bulk.md).",
    )
    SCALEOPS_BULK_MAX_RETRIES = Setting(
        3, int, "Retries of a batch after a serialization failure or deadlock when max_retries is not given.", min=0
    )
    SCALEOPS_BULK_TEMP_TABLE_ROWS = Setting(
        100,
        int,
        "Batches larger than this go through a COPY'd temp table for upserts, RETURNING and updates;"
        " smaller ones use a VALUES list.",
        min=0,
    )

    # ---- cache (SCALEOPS_CACHE_*)
    SCALEOPS_CACHE_ENABLED = Setting(
        False,
        bool,
        "Switch the Redis cache on: cached reads use it and committed writes invalidate it (off: cached reads go"
        " to the database and writes cost no Redis call).",
    )
    SCALEOPS_CACHE_ALIAS = Setting("default", str, "The CACHES alias (a django-redis backend) holding cached results.")
    SCALEOPS_CACHE_PREFIX = Setting("scaleops", str, "Namespace of every cache, stamp and lease key.")
    SCALEOPS_CACHE_SIGNING_KEY: Setting[str | None] = Setting(
        None,
        (str, type(None)),
        "Secret that signs cached values (HMAC-SHA256, checked before unpickling); None: values are unsigned.",
    )
    SCALEOPS_CACHE_DEFAULT_TIMEOUT = Setting(
        300, int, "Seconds a cached result stays fresh when no timeout is given.", min=1
    )
    SCALEOPS_CACHE_STALE_GRACE = Setting(
        30, int, "Seconds past its timeout a result may still be served while one caller refreshes it.", min=0
    )
    SCALEOPS_CACHE_LEASE_TIMEOUT_MS = Setting(
        5000, int, "Milliseconds a refresh lease lives (the longest fetch it covers).", min=1
    )
    SCALEOPS_CACHE_LEASE_WAIT_MS = Setting(
        2000, int, "Milliseconds a caller waits for another's fetch before reading the database itself.", min=1
    )
    SCALEOPS_CACHE_XFETCH_BETA = Setting(
        1.0, (int, float), "XFetch early-refresh eagerness; 0 turns early refresh off.", min=0
    )
    SCALEOPS_CACHE_L1_TIMEOUT = Setting(
        0.0, (int, float), "Seconds results stay in the in-process L1 tier; 0 turns L1 off.", min=0
    )
    SCALEOPS_CACHE_L1_MAX_ENTRIES = Setting(
        10_000, int, "Entries the in-process L1 tier holds before evicting the oldest.", min=1
    )
    SCALEOPS_CACHE_COMPILED_QUERIES = Setting(
        2048,
        int,
        "Compiled keys of cached querysets a process keeps, so a queryset built again alike is not compiled"
        " again (docs/cache.md, The key); 0 compiles every queryset built per read.",
        min=0,
    )
    SCALEOPS_CACHE_BREAKER_COOLDOWN = Setting(
        2.0,
        (int, float),
        "Seconds to read the database directly after Redis fails, before trying it again.",
        min=0,
        old_names=("SCALEOPS_CACHE_RETRY_AFTER",),
    )
    SCALEOPS_CACHE_STATS_FLUSH_INTERVAL = Setting(
        10.0,
        (int, float),
        "Seconds between flushes of statistics deltas to Redis (cluster totals); 0 turns it off.",
        min=0,
        old_names=("SCALEOPS_CACHE_STATS_FLUSH_SECONDS",),
    )
    SCALEOPS_CACHE_DEPENDENCIES: Setting[dict[str, list[str]]] = Setting(
        {}, dict, 'Cascades: {"app.Model": ["app.Other"]} also invalidates Other when Model changes.'
    )
    SCALEOPS_CACHE_FILL_USING: Setting[str | None] = Setting(
        None,
        (str, type(None)),
        "Alias cache misses are filled from (None: the router's primary when it has replicas).",
    )
    SCALEOPS_CACHE_FRESHNESS_HOOK: Setting[str | None] = Setting(
        None, (str, type(None)), "Dotted path of a callable(tables, using) -> bool; True bypasses the cache."
    )

    # ---- monitoring and HTTP (SCALEOPS_MONITOR_*, SCALEOPS_HTTP_*)
    SCALEOPS_MONITOR_ENABLED: Setting[bool] = Setting(
        False, bool, "Install the query monitor on every database connection (the example project turns it on)."
    )
    SCALEOPS_MONITOR_SLOW_QUERY_MS: Setting[int | float] = Setting(
        100,
        (int, float),
        "A query taking at least this many milliseconds is slow (0: every query, to see them all).",
        min=0,
        old_names=("SCALEOPS_SLOW_QUERY_MS",),
    )
    SCALEOPS_MONITOR_MAX_FINGERPRINTS = Setting(
        500, int, "Statement fingerprints tracked per process; further statements are counted under 'other'.", min=1
    )
    SCALEOPS_MONITOR_N_PLUS_ONE = Setting(
        10, int, "Log an N+1 hint when one statement runs this many times in a request (0 turns it off).", min=0
    )
    SCALEOPS_MONITOR_HEALTH_WINDOW = Setting(
        60, int, "Seconds of the sliding window the query health is read from.", min=1
    )
    SCALEOPS_MONITOR_HEALTH_MIN_SAMPLE = Setting(
        100, int, "Queries the window needs before a health verdict; fewer gives 'unknown'.", min=0
    )
    SCALEOPS_MONITOR_DEGRADED_SHARE = Setting(
        0.05, float, "Slow share from which query health is 'degraded'.", above=0, below=1
    )
    SCALEOPS_MONITOR_UNHEALTHY_SHARE = Setting(
        0.10, float, "Slow share above which query health is 'unhealthy'.", above=0, below=1
    )
    SCALEOPS_MONITOR_CACHE_ALIAS: Setting[str | None] = Setting(
        "default",
        (str, type(None)),
        "django-redis cache alias that sums the figures of all worker processes; None keeps them per process.",
        old_names=("SCALEOPS_MONITOR_REDIS_CACHE",),
    )
    SCALEOPS_MONITOR_REDIS_PREFIX = Setting("scaleops:qm", str, "Prefix of the monitor's Redis keys.")
    SCALEOPS_MONITOR_FLUSH_INTERVAL: Setting[int | float] = Setting(
        5.0, (int, float), "Seconds between two flushes of a process's figures to Redis.", above=0
    )
    SCALEOPS_MONITOR_TOKEN: Setting[str | None] = Setting(
        None,
        (str, type(None)),
        "Bearer token that opens the metrics and health endpoints (besides a staff session); None: staff only.",
    )
    SCALEOPS_MONITOR_HEALTH_DATABASES: Setting[list[str] | None] = Setting(
        None, (list, tuple, type(None)), "Database aliases the readiness check pings; None: every alias.", items=str
    )
    SCALEOPS_MONITOR_HEALTH_CRITICAL: Setting[list[str]] = Setting(
        ["default"],
        (list, tuple),
        "Aliases whose failure makes readiness fail (503); others only degrade it.",
        items=str,
    )
    SCALEOPS_HTTP_COMPRESS_MIN_BYTES = Setting(
        1024, int, "Responses shorter than this many bytes stay uncompressed.", min=0
    )
    SCALEOPS_HTTP_COMPRESS_TYPES: Setting[list[str]] = Setting(
        [
            "text/*",
            "application/json",
            "application/*+json",
            "application/javascript",
            "application/xml",
            "application/*+xml",
            "image/svg+xml",
        ],
        (list, tuple),
        "Content types worth compressing ('*' wildcards allowed); images, archives and the rest are left alone.",
        items=str,
    )
    SCALEOPS_HTTP_ENCODINGS: Setting[list[str]] = Setting(
        ["br", "zstd", "gzip"],
        (list, tuple),
        "Encodings offered, preferred first on equal q-values; br and zstd only when their package is installed.",
        items=str,
        item_choices=("br", "zstd", "gzip"),
    )
    SCALEOPS_HTTP_CACHE_PATHS: Setting[list[str]] = Setting(
        [], (list, tuple), "Path prefixes whose successful GET responses get a default Cache-Control.", items=str
    )
    SCALEOPS_HTTP_CACHE_MAX_AGE = Setting(3600, int, "max-age (seconds) of that default Cache-Control.", min=0)

    # ---- PgBouncer (SCALEOPS_PGBOUNCER_*)

    SCALEOPS_PGBOUNCER_ALIASES: Setting[dict[str, dict[str, Any]]] = Setting(
        {},
        dict,
        "Database aliases that connect through PgBouncer, each mapped to its options "
        "(pool_mode, admin_url, direct, max_prepared_statements); see docs/pgbouncer.md.",
    )
    SCALEOPS_PGBOUNCER_MAX_WAIT_MS = Setting(
        100, int, "A client waiting this long (ms) for a server connection makes health degraded.", min=0
    )
    SCALEOPS_PGBOUNCER_MAX_WAIT_CRITICAL_MS = Setting(
        1000, int, "A client waiting this long (ms) for a server connection makes health unhealthy.", min=0
    )
    SCALEOPS_PGBOUNCER_UTILISATION_WARN = Setting(
        0.8, (int, float), "Share of a pool's server connections in use above which health is degraded.", min=0, max=1
    )
    SCALEOPS_PGBOUNCER_LEAK_SECONDS = Setting(
        30, (int, float), "A client holding a server connection this long (s) since its last query is a leak.", min=0
    )
    SCALEOPS_PGBOUNCER_CHURN_PER_MINUTE = Setting(
        60, (int, float), "New server sessions per minute above which health reports server churn.", min=0
    )
    SCALEOPS_PGBOUNCER_METRICS_TTL = Setting(
        5, (int, float), "Seconds the metrics endpoint reuses one reading of the admin console.", min=0
    )
    SCALEOPS_PGBOUNCER_CONNECT_TIMEOUT = Setting(
        3, int, "Seconds to wait for PgBouncer's admin console before reporting it unreachable.", min=1
    )
    SCALEOPS_PGBOUNCER_FORK_GUARD = Setting(
        True, bool, "Forget database connections and native pools inherited across os.fork()."
    )

    # ---- operations dashboard (SCALEOPS_DASHBOARD_*)

    SCALEOPS_DASHBOARD_SAMPLE = Setting(
        False, bool, "Worker processes record the dashboard's history (one point a minute for the fleet)."
    )
    SCALEOPS_DASHBOARD_CACHE_ALIAS: Setting[str | None] = Setting(
        "default", (str, type(None)), "django-redis cache alias that keeps the dashboard's history; None: no history."
    )
    SCALEOPS_DASHBOARD_REDIS_PREFIX = Setting("scaleops:dash", str, "Prefix of the dashboard history's Redis keys.")
    SCALEOPS_DASHBOARD_HISTORY_POINTS = Setting(
        1440, int, "Per-minute points kept per series (1440: a day); bounds the history's memory.", min=60, max=10080
    )
    SCALEOPS_DASHBOARD_REFRESH_SECONDS = Setting(
        30, int, "Seconds between two reloads of the dashboard page in the browser.", min=10, max=3600
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

    @classmethod
    def renamed(cls) -> dict[str, str]:
        """Old name -> current name of every renamed setting."""
        return {old: name for name, setting in cls.declared().items() for old in setting.old_names}


conf = Settings()
