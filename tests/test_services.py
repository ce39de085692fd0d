"""The launcher's servers are real: replication, read-only standby, PgBouncer, Redis, faults."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import redis
from django.core.cache import cache
from django.db import InternalError, ProgrammingError, connections, transaction

from django_scaleops.testing.services import MANIFEST, Services

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica", "pgbouncer"])


def server_port(alias: str) -> int:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT inet_server_port()")
        return int(cursor.fetchone()[0])


def replica_sees(marker: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with connections["replica"].cursor() as cursor:
                cursor.execute("SELECT count(*) FROM replication_probe WHERE marker = %s", [marker])
                if cursor.fetchone()[0]:
                    return True
        except ProgrammingError:  # the CREATE TABLE itself has not been replayed yet
            pass
        time.sleep(0.02)
    return False


@pytest.fixture
def probe_table():
    with connections["default"].cursor() as cursor:
        cursor.execute("CREATE TABLE replication_probe (marker text PRIMARY KEY)")
    yield
    with connections["default"].cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS replication_probe")


def test_replica_is_a_different_server_in_recovery():
    assert server_port("default") != server_port("replica")
    with connections["replica"].cursor() as cursor:
        cursor.execute("SELECT pg_is_in_recovery(), current_database()")
        in_recovery, name = cursor.fetchone()
    assert in_recovery is True
    assert name == connections["default"].settings_dict["NAME"]


def test_write_through_default_replicates(probe_table):
    with transaction.atomic(using="default"), connections["default"].cursor() as cursor:
        cursor.execute("INSERT INTO replication_probe VALUES ('replicated')")
    assert replica_sees("replicated")


def test_write_through_replica_fails_read_only():
    with pytest.raises(InternalError, match="read-only transaction"), connections["replica"].cursor() as cursor:
        cursor.execute("INSERT INTO django_content_type (app_label, model) VALUES ('x', 'y')")
    with pytest.raises(InternalError, match="read-only transaction"), connections["replica"].cursor() as cursor:
        cursor.execute("CREATE TABLE replica_write_probe (id int)")


def test_pgbouncer_reaches_the_primary_in_transaction_mode(services):
    assert server_port("pgbouncer") == services.primary.port

    with psycopg.connect(os.environ["PGBOUNCER_ADMIN_URL"], autocommit=True) as admin:
        cursor = psycopg.ClientCursor(admin)
        cursor.execute("SHOW POOLS")
        assert cursor.description is not None
        columns = [c.name for c in cursor.description]
        pools = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    test_pool = [p for p in pools if p["database"] == connections["default"].settings_dict["NAME"]]
    assert test_pool
    assert test_pool[0]["pool_mode"] == "transaction"


def test_redis_is_the_cache():
    cache.set("scaleops:probe", {"n": 1}, 30)
    assert cache.get("scaleops:probe") == {"n": 1}
    assert cache.delete("scaleops:probe")


@pytest.mark.services
def test_replica_stop_and_restart(services, probe_table):
    services.replica.stop("immediate")
    connections["replica"].close()
    try:
        with pytest.raises(Exception, match=r"connect|Connection|connection"):
            server_port("replica")
    finally:
        services.replica.start()
    connections["replica"].close()
    with transaction.atomic(using="default"), connections["default"].cursor() as cursor:
        cursor.execute("INSERT INTO replication_probe VALUES ('after-restart')")
    assert replica_sees("after-restart")


@pytest.mark.services
def test_replica_apply_delay(services, probe_table):
    services.replica.set_apply_delay("1500ms")
    try:
        with transaction.atomic(using="default"), connections["default"].cursor() as cursor:
            cursor.execute("INSERT INTO replication_probe VALUES ('delayed')")
        assert not replica_sees("delayed", timeout=0.5)
        assert replica_sees("delayed", timeout=10)
    finally:
        services.replica.set_apply_delay(None)


@pytest.mark.services
def test_redis_stop_and_restart(services):
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    services.redis.stop()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    services.redis.start()
    assert client.ping() is True


@pytest.mark.services
def test_pgbouncer_stop_and_restart(services):
    services.pgbouncer.stop()
    connections["pgbouncer"].close()
    with pytest.raises(Exception, match=r"connect|Connection|connection"):
        server_port("pgbouncer")
    services.pgbouncer.start()
    connections["pgbouncer"].close()
    assert server_port("pgbouncer") == services.primary.port


@pytest.mark.django_db(databases=[])
def test_a_killed_owner_leaves_nothing_behind(tmp_path: Path):
    """SIGKILL the process that owns a set: its reaper still stops every server."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_URL") and k != "SCALEOPS_SERVICES_DIR"}
    owner = subprocess.Popen(
        [sys.executable, "-m", "django_scaleops.testing.services", "run", "--", sys.executable, "-c",
         "import os, time; print(os.environ['SCALEOPS_SERVICES_DIR'], os.getpid(), flush=True); time.sleep(60)"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert owner.stdout is not None
    root, child_pid = owner.stdout.readline().split()
    assert (Path(root) / MANIFEST).exists()
    started = Services.attach(root)
    assert started.primary.is_running() and started.replica.is_running()
    assert started.redis.is_running() and started.pgbouncer.is_running()
    owner.kill()
    owner.wait()
    os.kill(int(child_pid), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while Path(root).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(root).exists()
    for port in (started.primary.port, started.replica.port, started.redis.port, started.pgbouncer.port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5)
