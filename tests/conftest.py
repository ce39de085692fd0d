from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from django_scaleops.testing.pytest_plugin import use_real_replicas
from django_scaleops.testing.services import Services


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """pytest-django's test databases, with "replica" and "pgbouncer" reading their real servers."""
    with use_real_replicas(django_db_blocker):
        yield


@pytest.fixture(scope="session")
def services(scaleops_services: Services) -> Services:
    """Control of the launcher's servers; skipped when the suite runs on the user's own URLs."""
    return scaleops_services
