"""Settings that start and reach no server: for mypy's Django plugin and tests marked ``units``.

The aliases look like the real ones (PostgreSQL, django-redis) so checks and type inference see the
same project, but their hosts do not resolve: a test that touches them fails at once.
"""

from __future__ import annotations

from typing import Any

from tests.settings_common import *  # noqa: F403

TEST_DATABASE_NAME = "test_scaleops"
_NOWHERE: dict[str, Any] = {"ENGINE": "django.db.backends.postgresql", "HOST": "no-server.invalid", "NAME": "scaleops"}
DATABASES: dict[str, dict[str, Any]] = {
    "default": {**_NOWHERE, "TEST": {"NAME": TEST_DATABASE_NAME}},
    "replica": {**_NOWHERE, "TEST": {"MIRROR": "default"}},
    "pgbouncer": {**_NOWHERE, "TEST": {"MIRROR": "default"}, "DISABLE_SERVER_SIDE_CURSORS": True},
    "replica_mirror": {**_NOWHERE, "TEST": {"MIRROR": "default"}},
}
CACHES: dict[str, dict[str, Any]] = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://no-server.invalid:6379/0",
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
    }
}
