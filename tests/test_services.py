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
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from django_scaleops.testing.redis_cluster import RedisCluster as RedisClusterServers
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
def test_a_standby_stopped_like_a_crash_starts_from_a_recent_restartpoint(services, probe_table):
    # Its next start replays the WAL since its last restartpoint; without one taken at the stop,
    # that was the primary's last timed checkpoint (up to 5 minutes of the suite's writes).
    with transaction.atomic(using="default"), connections["default"].cursor() as cursor:
        cursor.execute("INSERT INTO replication_probe SELECT 'bulk-' || g FROM generate_series(1, 20000) g")
    written = services.primary.sql("SELECT pg_current_wal_lsn()")
    services.replica.stop("immediate")
    connections["replica"].close()
    services.replica.start()
    redo = services.replica.sql("SELECT redo_lsn FROM pg_control_checkpoint()")
    assert services.replica.sql(f"SELECT '{redo}'::pg_lsn >= '{written}'::pg_lsn") == "t", (redo, written)
    assert replica_sees("bulk-20000")


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


# --------------------------------------------------------------------------- Redis Cluster, on demand


def cluster_client(url: str) -> RedisCluster:
    return RedisCluster.from_url(url, socket_timeout=2, socket_connect_timeout=1, retry=Retry(NoBackoff(), 1))


@pytest.mark.cluster
@pytest.mark.django_db(databases=[])
def test_cluster_is_three_masters_covering_every_slot(redis_cluster: RedisClusterServers):
    info = redis_cluster.info(0)
    assert info["cluster_state"] == "ok"
    assert info["cluster_known_nodes"] == "3"
    assert info["cluster_size"] == "3"
    counts = redis_cluster.slot_counts()
    assert sorted(counts) == sorted(node.port for node in redis_cluster.nodes)
    assert sum(counts.values()) == 16384
    assert all(count > 0 for count in counts.values())
    assert os.environ["REDIS_CLUSTER_URL"] == redis_cluster.url
    assert os.environ["REDIS_CLUSTER_URLS"].split(",") == redis_cluster.urls
    assert Services.attach(os.environ["SCALEOPS_SERVICES_DIR"]).env()["REDIS_CLUSTER_URL"] == redis_cluster.url


@pytest.mark.cluster
@pytest.mark.django_db(databases=[])
def test_cluster_spreads_keys_over_the_three_masters(redis_cluster: RedisClusterServers):
    client = cluster_client(redis_cluster.url)
    keys = [f"spread:{i}" for i in range(300)]
    try:
        for key in keys:
            client.set(key, key)
        held: dict[int, set[str]] = {}
        for node in redis_cluster.nodes:
            direct = redis.Redis(port=node.port)
            held[node.port] = {k.decode() for k in direct.scan_iter("spread:*", count=1000)}
            direct.close()
        assert all(held.values()), held  # every master holds some
        assert sorted(k for part in held.values() for k in part) == sorted(keys)  # each key exactly once
        for key in keys[:20]:
            assert key in held[redis_cluster.owner_of(key).port]
    finally:
        client.delete(*keys[:1])  # a single-slot DEL; the rest go with the cluster
        for key in keys[1:]:
            client.delete(key)
        client.close()


def key_on(cluster: RedisClusterServers, port: int, prefix: str) -> str:
    return next(k for k in (f"{prefix}:{i}" for i in range(1000)) if cluster.owner_of(k).port == port)


@pytest.mark.cluster
@pytest.mark.django_db(databases=[])
def test_cluster_master_killed_and_restarted(redis_cluster: RedisClusterServers):
    victim, survivor = redis_cluster.nodes[1], redis_cluster.nodes[0]
    lost, kept = key_on(redis_cluster, victim.port, "kill"), key_on(redis_cluster, survivor.port, "kill")
    client = cluster_client(redis_cluster.url)
    client.set(lost, "1")
    client.set(kept, "1")
    redis_cluster.kill(victim)
    assert not victim.is_running()
    try:
        with pytest.raises(redis.RedisError):
            client.get(lost)
        # The other masters keep serving their own slots while one is down.
        assert client.get(kept) == b"1"
        # The survivors agree it failed within a few node timeouts; its slots are then marked failed.
        victim_slots = str(redis_cluster.slot_counts()[victim.port])
        deadline = time.monotonic() + 10
        while redis_cluster.info(survivor)["cluster_slots_fail"] != victim_slots and time.monotonic() < deadline:
            time.sleep(0.1)
        assert redis_cluster.info(survivor)["cluster_slots_fail"] == victim_slots
        assert client.get(kept) == b"1"
    finally:
        started = time.monotonic()
        redis_cluster.restart(victim)
    assert time.monotonic() - started < 10
    assert redis_cluster.info(survivor)["cluster_state"] == "ok"
    assert redis_cluster.info(survivor)["cluster_slots_fail"] == "0"
    assert redis_cluster.slot_counts()[victim.port] > 0  # same node, same slots
    fresh = cluster_client(redis_cluster.url)
    assert fresh.get(lost) is None  # no persistence: its keys died with it
    fresh.set(lost, "2")
    assert fresh.get(lost) == b"2"
    fresh.delete(lost)
    fresh.delete(kept)
    fresh.close()
    client.close()


@pytest.mark.cluster
@pytest.mark.django_db(databases=[])
def test_cluster_reshard_moves_slots_and_keys(redis_cluster: RedisClusterServers):
    source, target = redis_cluster.nodes[2], redis_cluster.nodes[0]
    client = cluster_client(redis_cluster.url)
    keys = [f"reshard:{i}" for i in range(200)]
    for key in keys:
        client.set(key, key)
    before = redis_cluster.slot_counts()
    redis_cluster.reshard(source, target, 50)
    after = redis_cluster.slot_counts()
    assert after[source.port] == before[source.port] - 50
    assert after[target.port] == before[target.port] + 50
    try:
        fresh = cluster_client(redis_cluster.url)
        assert [fresh.get(k) for k in keys] == [k.encode() for k in keys]  # every key moved with its slot
        fresh.close()
    finally:
        redis_cluster.reshard(target, source, 50)
        for key in keys:
            client.delete(key)
        client.close()
    assert redis_cluster.slot_counts() == before


@pytest.mark.cluster
@pytest.mark.django_db(databases=[])
def test_on_demand_servers_are_torn_down_with_the_set():
    """The cluster and a second standby, started by another process's view of the set (attach),
    are stopped by the owner's teardown, which never saw them start."""
    saved = dict(os.environ)  # starting them exports their URLs: keep the suite's own
    owner = Services.start()
    try:
        other = Services.attach(owner.root)
        cluster = other.redis_cluster()
        standby = other.add_replica()
        assert standby.sql("SELECT pg_is_in_recovery()") == "t"
        assert other.env()["REPLICA2_URL"] == standby.url
        assert other.env()["REDIS_CLUSTER_URLS"].split(",") == cluster.urls
        ports = [standby.port, *(node.port for node in cluster.nodes)]
        assert owner.extra_replicas == []  # its own manifest is the one read at start
    finally:
        owner.teardown()
        os.environ.clear()
        os.environ.update(saved)
    assert not owner.root.exists()
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5)


@pytest.mark.cluster
@pytest.mark.django_db(databases=[])
def test_ha_cluster_fails_a_killed_master_over_to_its_replica(redis_cluster_ha: RedisClusterServers):
    assert len(redis_cluster_ha.nodes) == 6
    masters = redis_cluster_ha.masters()
    assert len(masters) == 3
    assert redis_cluster_ha.info(0)["cluster_size"] == "3"
    key = "ha:kept"
    owner = redis_cluster_ha.owner_of(key)
    direct = redis.Redis(port=owner.port)
    direct.set(key, "kept")
    assert direct.wait(1, 2000) == 1  # its replica has it
    direct.close()
    redis_cluster_ha.kill(owner)
    started = time.monotonic()
    redis_cluster_ha.wait_failover(owner)
    assert time.monotonic() - started < 15
    promoted = redis_cluster_ha.owner_of(key)
    assert promoted != owner
    assert promoted not in masters  # the replica took over
    client = cluster_client(redis_cluster_ha.url)
    assert client.get(key) == b"kept"
    redis_cluster_ha.restart(owner)
    assert owner not in redis_cluster_ha.masters()  # back, as a replica of the one that took over
    client.delete(key)
    client.close()
