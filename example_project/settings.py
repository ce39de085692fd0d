"""Settings of the example messaging service.

Service URLs come from the environment (``DATABASE_URL``, ``REPLICA_URL``, ``REDIS_URL``);
when they are missing, a throwaway set of servers is started for this process.
"""

from __future__ import annotations

import os
from pathlib import Path

from django_scaleops.logging import build_logging
from django_scaleops.testing.env import database_from_url, redis_cache_from_url
from django_scaleops.testing.services import ensure_services

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-insecure-key-for-local-demo-only")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

# The benchmark of the bare example (no django-scaleops) flips this off.
WITH_SCALEOPS = os.environ.get("EXAMPLE_SCALEOPS", "1") == "1"

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
    *(["django_scaleops.logging.middleware.CorrelationIdMiddleware"] if WITH_SCALEOPS else []),
    "django.middleware.security.SecurityMiddleware",
    # API-key rate limiting: before sessions and auth, so a refused request costs one Redis call.
    *(["django_scaleops.ratelimit.middleware.ApiKeyThrottleMiddleware"] if WITH_SCALEOPS else []),
    # Per-request routing state and the read-your-writes cookie: before anything that reads.
    *(["django_scaleops.replicas.middleware.ReplicaRoutingMiddleware"] if WITH_SCALEOPS else []),
    # Compression and conditional GET: any order works; compression first saves work on 304s.
    *(
        [
            "django_scaleops.monitoring.middleware.QueryScopeMiddleware",  # N+1 hints under ASGI too
            "django_scaleops.http.middleware.CacheControlMiddleware",
            "django_scaleops.http.middleware.CompressionMiddleware",
            "django_scaleops.http.middleware.ConditionalGetMiddleware",
        ]
        if WITH_SCALEOPS
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
DATABASE_ROUTERS = ["django_scaleops.routers.PrimaryReplicaRouter"] if WITH_SCALEOPS else []
SCALEOPS_ROUTER_REPLICA_ALIASES = ["replica"]

# Short timeouts: the rate limiter fails over (per tier) quickly when Redis hangs.
CACHES = {"default": redis_cache_from_url(_services["REDIS_URL"], SOCKET_CONNECT_TIMEOUT=0.25, SOCKET_TIMEOUT=0.25)}
# Cached querysets and @cached_function (see chat/views.py); off unless asked for.
SCALEOPS_CACHE_ENABLED = WITH_SCALEOPS

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Query monitoring: every query timed; slow ones (>= 100 ms) logged as JSON; figures summed across
# worker processes in Redis; /metrics/queries, /metrics and /health/ open to staff sessions or to
# "Authorization: Bearer $SCALEOPS_MONITOR_TOKEN".
SCALEOPS_MONITOR_ENABLED = WITH_SCALEOPS
SCALEOPS_MONITOR_TOKEN = os.environ.get("SCALEOPS_MONITOR_TOKEN") or None
SCALEOPS_HTTP_CACHE_PATHS = ["/static/"]


# JSON log lines with the request ID and secrets masked (readable lines when DEBUG).
if WITH_SCALEOPS:
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
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "partition_archive": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": os.environ.get("EXAMPLE_ARCHIVE_DIR", str(BASE_DIR / "var" / "partition-archive"))},
    },
}
SCALEOPS_PARTITION_ARCHIVE_STORAGE = "partition_archive"
