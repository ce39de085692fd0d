"""A pytest plugin: throwaway PostgreSQL (primary + streaming standby), Redis and PgBouncer for a suite.

Installed with django-scaleops (entry point ``pytest11``) and inert until switched on, by the
command line or the ini file::

    pytest --scaleops-services
    # pytest.ini / [tool:pytest] / [tool.pytest.ini_options]:  scaleops_services = true

Switched on, it starts the servers before pytest-django reads the settings, so the settings module
can build ``DATABASES`` and ``CACHES`` from ``DATABASE_URL``, ``REPLICA_URL``, ``REDIS_URL``,
``PGBOUNCER_URL`` and ``PGBOUNCER_ADMIN_URL`` (see docs/testing.md). When those URLs are all set
already (a CI job with its own services), they are used and nothing is started. The servers are
torn down when pytest ends, and by a reaper process if pytest is killed.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

OPTION = "--scaleops-services"
INI = "scaleops_services"
_started_key = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("django-scaleops")
    group.addoption(
        OPTION,
        action="store_true",
        dest="scaleops_services",
        default=False,
        help="start throwaway PostgreSQL (primary + standby), Redis and PgBouncer servers for this run",
    )
    parser.addini(
        INI, type="bool", default=False, help="start the django-scaleops test services (like --scaleops-services)"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    # Before pytest-django's own hook, which imports the settings module that reads the URLs.
    options = parser.parse_known_args(args)
    if not (options.scaleops_services or early_config.getini(INI)):
        return
    if options.help or options.version:
        return
    from django_scaleops.testing.services import ServiceError, ensure_services

    try:
        ensure_services()
    except ServiceError as exc:
        raise pytest.UsageError(f"{OPTION}: {exc}") from exc
    early_config.stash[_started_key] = True


def pytest_report_header(config: pytest.Config) -> list[str]:
    if not config.stash.get(_started_key, False):
        return []
    from django_scaleops.testing.services import SERVICES_DIR_VAR

    where = os.environ.get(SERVICES_DIR_VAR)
    return [f"django-scaleops services: {where or 'the URLs given in the environment'}"]


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.stash.get(_started_key, False):
        from django_scaleops.testing.services import stop_started_services

        stop_started_services()


@pytest.fixture(scope="session")
def scaleops_services() -> Any:
    """Control of the running servers (``.replica.stop()``, ``.redis.start()``, ...).

    Skips the test when the URLs came from the environment: servers we did not start are not ours
    to stop.
    """
    from django_scaleops.testing.services import SERVICES_DIR_VAR, Services

    root = os.environ.get(SERVICES_DIR_VAR)
    if not root:
        pytest.skip("the services were given by URL, so they cannot be stopped and restarted here")
    return Services.attach(root)


@pytest.fixture
def redis_cluster(scaleops_services: Any) -> Iterator[Any]:
    """A Redis Cluster of three masters (``django_scaleops.testing.redis_cluster.RedisCluster``).

    Started on the first test that asks and kept for the run; after each test, a master the test
    killed or paused is brought back, so the next test finds the whole cluster ``ok``.
    """
    cluster = scaleops_services.redis_cluster()
    yield cluster
    cluster.heal()


@pytest.fixture
def redis_cluster_ha(scaleops_services: Any) -> Iterator[Any]:
    """A second Redis Cluster: three masters with a replica each, so a killed master fails over.

    Started on first use; after each test, killed or paused nodes are brought back (as replicas of
    the masters that took over).
    """
    cluster = scaleops_services.redis_cluster(replicas=1)
    yield cluster
    cluster.heal()


@pytest.fixture
def second_replica(scaleops_services: Any) -> Iterator[Any]:
    """A second streaming standby (``replica2``, a ``PostgresServer``), added on first use.

    Kept for the run; after each test it is running again and replays without delay.
    """
    extra = scaleops_services.extra_replicas
    server = extra[0] if extra else scaleops_services.add_replica()
    os.environ[f"{server.name.upper()}_URL"] = server.url
    if not server.is_running():
        server.start()
    yield server
    if not server.is_running():
        server.start()
    server.set_apply_delay(None)


@contextlib.contextmanager
def use_real_replicas(django_db_blocker: Any) -> Iterator[list[str]]:
    """Point each ``TEST: {"MIRROR": ...}`` alias back at its own server, on the test database.

    Django's test setup makes a mirror alias a second name for the primary's connection. With a
    real streaming standby the test database and every committed row replicate, so the replica
    alias can read from the standby itself: use it in a ``django_db_setup`` override (see
    docs/testing.md). Yields the aliases it re-pointed.
    """
    from django.conf import settings
    from django.db import connections

    # The settings dicts of mirrors keep their own HOST/PORT: only the connections were swapped.
    mirrors = {
        alias: copy.deepcopy(database)
        for alias, database in settings.DATABASES.items()
        if database.get("TEST", {}).get("MIRROR")
    }
    with django_db_blocker.unblock():
        for alias, real in mirrors.items():
            primary = connections[real["TEST"]["MIRROR"]]
            connection = connections[alias]
            connection.close()
            connection.settings_dict = {**real, "NAME": primary.settings_dict["NAME"]}
            _wait_for_replay(primary, connection)
    try:
        yield sorted(mirrors)
    finally:
        with django_db_blocker.unblock():
            for alias in mirrors:
                connections[alias].close()
            primaries = {real["TEST"]["MIRROR"] for real in mirrors.values()}
            for alias in (p for p in primaries if connections[p].vendor == "postgresql"):
                # A pooler (PgBouncer) keeps server connections to the test database open;
                # end them so the test runner's DROP DATABASE can run.
                with connections[alias].cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = %s AND pid <> pg_backend_pid()",
                        [connections[alias].settings_dict["NAME"]],
                    )


def _wait_for_replay(primary: Any, standby: Any, timeout: float = 30.0) -> None:
    """Wait until a standby has replayed the primary's WAL as of now (the new test schema)."""
    if primary.vendor != "postgresql" or standby.vendor != "postgresql":
        return
    with standby.cursor() as cursor:
        cursor.execute("SELECT pg_is_in_recovery()")
        if not cursor.fetchone()[0]:
            return  # a pooler or another primary: nothing to replay
    with primary.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()")
        target = cursor.fetchone()[0]
    deadline = time.monotonic() + timeout
    with standby.cursor() as cursor:
        while True:
            cursor.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [target])
            if cursor.fetchone()[0]:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the standby {standby.alias!r} did not replay {target} within {timeout:.0f}s")
            time.sleep(0.02)
