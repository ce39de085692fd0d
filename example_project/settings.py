"""Settings of the example messaging service.

Service URLs come from the environment (``DATABASE_URL``, ``REPLICA_URL``, ``REDIS_URL``);
when they are missing, a throwaway set of servers is started for this process.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from django_scaleops.logging import build_logging
from django_scaleops.testing.env import database_from_url, redis_cache_from_url
from django_scaleops.testing.services import ensure_services

BASE_DIR = Path(__file__).resolve().parent.parent


def _secret_key() -> str:
    """``DJANGO_SECRET_KEY``, else a random key made once and kept in ``var/secret-key``.

    Never a fixed key: with ``DEBUG=0`` a well-known key would let anyone forge an admin session.
    Every process of the checkout (gunicorn's workers, ``manage.py`` commands) reads the same file,
    so sessions and the cache's signed values hold across them.
    """
    if os.environ.get("DJANGO_SECRET_KEY"):
        return os.environ["DJANGO_SECRET_KEY"]
    path = BASE_DIR / "var" / "secret-key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside, then linked into place: processes starting together all read one whole key.
        draft = path.with_name(f".secret-key.{os.getpid()}")
        with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
            file.write(secrets.token_urlsafe(50))
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
        draft.unlink()
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
# Local addresses only; a server reached by another name adds it: DJANGO_ALLOWED_HOSTS=api.example.com
ALLOWED_HOSTS = [
    "127.0.0.1",
    "localhost",
    "[::1]",
    "testserver",
    *(host.strip() for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",") if host.strip()),
]

# The benchmark of the bare example (no django-scaleops) flips this off.
WITH_SCALEOPS = os.environ.get("EXAMPLE_SCALEOPS", "1") == "1"
# Capabilities to leave off while WITH_SCALEOPS is on, e.g. EXAMPLE_SCALEOPS_OFF=cache,logging: the
# benchmark's breakdown measures what each one costs a request. Names: CAPABILITIES below.
CAPABILITIES = ("logging", "ratelimit", "router", "monitor", "http", "cache", "dashboard")
_OFF = {name.strip() for name in os.environ.get("EXAMPLE_SCALEOPS_OFF", "").split(",") if name.strip()}
if _OFF - set(CAPABILITIES):
    raise ValueError(f"EXAMPLE_SCALEOPS_OFF: unknown capabilities {sorted(_OFF - set(CAPABILITIES))}")


def _on(capability: str) -> bool:
    return WITH_SCALEOPS and capability not in _OFF


INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    *(["django_scaleops"] if WITH_SCALEOPS else []),
    "example_project.chat",
]

MIDDLEWARE = [
    # First, so everything below logs with the request ID.
    *(["django_scaleops.logging.middleware.CorrelationIdMiddleware"] if _on("logging") else []),
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's CSS and JavaScript) under gunicorn with DEBUG=0, before anything
    # that would spend a query, a Redis call or quota on them.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # API-key rate limiting: before sessions and auth, so a refused request costs one Redis call.
    *(["django_scaleops.ratelimit.middleware.ApiKeyThrottleMiddleware"] if _on("ratelimit") else []),
    # Per-request routing state and the read-your-writes cookie: before anything that reads.
    *(["django_scaleops.replicas.middleware.ReplicaRoutingMiddleware"] if _on("router") else []),
    # The per-request query scope (N+1 hints under ASGI too).
    *(["django_scaleops.monitoring.middleware.QueryScopeMiddleware"] if _on("monitor") else []),
    # Compression and conditional GET: any order works; compression first saves work on 304s.
    *(
        [
            "django_scaleops.http.middleware.CacheControlMiddleware",
            "django_scaleops.http.middleware.CompressionMiddleware",
            "django_scaleops.http.middleware.ConditionalGetMiddleware",
        ]
        if _on("http")
        else []
    ),
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"
ASGI_APPLICATION = "example_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_services = ensure_services()

DATABASES = {
    "default": database_from_url(_services["DATABASE_URL"]),
    "replica": database_from_url(_services["REPLICA_URL"], TEST={"MIRROR": "default"}, OPTIONS={"connect_timeout": 2}),
    # PgBouncer in transaction mode in front of the primary; "default" stays direct (migrations).
    "pgbouncer": database_from_url(
        _services["PGBOUNCER_URL"], TEST={"MIRROR": "default"}, DISABLE_SERVER_SIDE_CURSORS=True
    ),
}
SCALEOPS_PGBOUNCER_ALIASES = {"pgbouncer": {"pool_mode": "transaction", "direct": "default"}}

# Reads go to the streaming replica once it has replayed what the client wrote (see docs/replicas.md).
DATABASE_ROUTERS = ["django_scaleops.routers.PrimaryReplicaRouter"] if _on("router") else []
SCALEOPS_ROUTER_REPLICA_ALIASES = ["replica"]
# One worker checks the replicas for all (through Redis): a restarted standby is back within seconds.
SCALEOPS_ROUTER_HEALTH_CACHE_ALIAS = "default"

# Short timeouts: the rate limiter fails over (per tier) quickly when Redis hangs.
CACHES = {"default": redis_cache_from_url(_services["REDIS_URL"], SOCKET_CONNECT_TIMEOUT=0.25, SOCKET_TIMEOUT=0.25)}
# Cached querysets and @cached_function (see chat/views.py); off unless asked for.
SCALEOPS_CACHE_ENABLED = _on("cache")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
# `manage.py collectstatic` copies the admin's files here (make demo does); WhiteNoise serves them.
STATIC_ROOT = os.environ.get("EXAMPLE_STATIC_ROOT", str(BASE_DIR / "var" / "staticfiles"))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Query monitoring: every query timed; slow ones (>= 100 ms) logged as JSON; figures summed across
# worker processes in Redis; /metrics/queries, /metrics and /health/ open to staff sessions or to
# "Authorization: Bearer $SCALEOPS_MONITOR_TOKEN".
SCALEOPS_MONITOR_ENABLED = _on("monitor")
SCALEOPS_MONITOR_TOKEN = os.environ.get("SCALEOPS_MONITOR_TOKEN") or None
SCALEOPS_HTTP_CACHE_PATHS = ["/static/"]
# The admin dashboard's history (/admin/scaleops/dashboard/): each worker records a point a minute.
SCALEOPS_DASHBOARD_SAMPLE = _on("dashboard")


# JSON log lines with the request ID and secrets masked (readable lines when DEBUG).
if _on("logging"):
    LOGGING = build_logging(debug=DEBUG)

# APM is off unless asked for, e.g. SCALEOPS_APM_ENABLED=sentry,datadog SENTRY_DSN=... make demo
SCALEOPS_APM_ENABLED = [vendor for vendor in os.environ.get("SCALEOPS_APM_ENABLED", "").split(",") if vendor]
SCALEOPS_APM_SERVICE = "example-chat"
SCALEOPS_APM_SENTRY_DSN = os.environ.get("SENTRY_DSN", "")
SCALEOPS_APM_DATADOG_AGENT_URL = os.environ.get("DD_TRACE_AGENT_URL", "")
# "sampled" (default): only kept requests are instrumented; "vendor": the SDKs' Django integrations.
SCALEOPS_APM_REQUEST_TRACING = os.environ.get("SCALEOPS_APM_REQUEST_TRACING", "sampled")

# Rate limiting: tiers and keys live in the admin (/admin/); `manage.py create_api_key NAME --tier Free`.
# Callers without a key are unlimited unless EXAMPLE_ANONYMOUS_TIER names a tier (e.g. "Free").
SCALEOPS_THROTTLE_ANONYMOUS_TIER = os.environ.get("EXAMPLE_ANONYMOUS_TIER") or None
SCALEOPS_THROTTLE_EXEMPT_PATHS = ["/admin/", "/static/"]
SCALEOPS_THROTTLE_GITHUB_HEADERS = True

# archive_partitions writes verified partition archives here (an S3Storage alias in production).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Gzip and Brotli copies made by collectstatic; no manifest, so a page never fails for want of
    # one (an uncollected file is a 404, not a 500).
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
    "partition_archive": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": os.environ.get("EXAMPLE_ARCHIVE_DIR", str(BASE_DIR / "var" / "partition-archive"))},
    },
}
SCALEOPS_PARTITION_ARCHIVE_STORAGE = "partition_archive"
