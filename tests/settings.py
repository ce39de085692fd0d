"""Test settings: every alias on a real server started by the launcher (or given by URL)."""

from __future__ import annotations

from django_scaleops.testing.env import database_from_url, redis_cache_from_url
from django_scaleops.testing.services import ensure_services
from tests.settings_common import *  # noqa: F403

_services = ensure_services()

TEST_DATABASE_NAME = "test_scaleops"

# "replica" and "pgbouncer" are real servers. Django's test setup treats a MIRROR alias as a
# copy of "default"; tests/conftest.py then points each back at its own server, on the test
# database that replication (or PgBouncer's pass-through) makes visible there.
DATABASES = {
    "default": database_from_url(_services["DATABASE_URL"], TEST={"NAME": TEST_DATABASE_NAME}),
    "replica": database_from_url(_services["REPLICA_URL"], TEST={"MIRROR": "default"}),
    "pgbouncer": database_from_url(
        _services["PGBOUNCER_URL"],
        TEST={"MIRROR": "default"},
        # Transaction pooling: no server-side cursors, no prepared statements.
        DISABLE_SERVER_SIDE_CURSORS=True,
        OPTIONS={"prepare_threshold": None},
    ),
    # A user's replica alias in a CI run with one server: a TEST MIRROR of "default" on the same
    # server (the router's tests check it is served read-only and kept out of transactions).
    "replica_mirror": database_from_url(_services["DATABASE_URL"], TEST={"MIRROR": "default"}),
}

CACHES = {"default": redis_cache_from_url(_services["REDIS_URL"])}
