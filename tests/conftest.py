from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import connections
from django.test.utils import setup_databases, teardown_databases

from django_scaleops.testing.services import SERVICES_DIR_VAR, Services

# The real connection settings of the aliases that Django's test setup treats as mirrors.
REAL_MIRRORS: dict[str, dict[str, Any]] = {
    alias: copy.deepcopy(db) for alias, db in settings.DATABASES.items() if db.get("TEST", {}).get("MIRROR")
}


@pytest.fixture(scope="session")
def django_db_setup(django_test_environment: None, django_db_blocker: Any) -> Iterator[None]:
    """Create the test database on the primary, then point mirrors at their real servers."""
    with django_db_blocker.unblock():
        old_config = setup_databases(verbosity=0, interactive=False, aliases=settings.DATABASES)
        test_name = connections["default"].settings_dict["NAME"]
        for alias, real in REAL_MIRRORS.items():
            connection = connections[alias]
            connection.close()
            connection.settings_dict = {**copy.deepcopy(real), "NAME": test_name}
    try:
        yield
    finally:
        with django_db_blocker.unblock():
            for alias in REAL_MIRRORS:
                connections[alias].close()
            # PgBouncer keeps server connections to the test database open; end them so
            # DROP DATABASE can run.
            with connections["default"].cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    [connections["default"].settings_dict["NAME"]],
                )
            teardown_databases(old_config, verbosity=0)


@pytest.fixture(scope="session")
def services() -> Services:
    """Control of the launcher's servers; skipped when the suite runs on the user's own URLs."""
    root = os.environ.get(SERVICES_DIR_VAR)
    if not root:
        pytest.skip("the services were given by URL, so they cannot be stopped and restarted here")
    return Services.attach(root)
