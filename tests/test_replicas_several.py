"""PrimaryReplicaRouter over two real streaming standbys: weighted round robin, a stopped standby's
share going to the other (not to the primary), read-your-writes served by whichever standby has
replayed the client's position, a lagging standby skipped, and health shared by worker processes
through Redis (one checks, the others read)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connections
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from django_scaleops.replicas.lsn import parse_lsn
from django_scaleops.replicas.prometheus import prometheus_families
from django_scaleops.replicas.state import current_state
from django_scaleops.routers import replica_status, reset_routing_state, use_primary
from django_scaleops.testing.env import database_from_url
from django_scaleops.testing.routing import record_reads
from django_scaleops.testing.services import PostgresServer, Services
from tests.router_helpers import fresh_routing, raw_scalar, router_settings, wait_until
from tests.routerapp.models import Note

pytestmark = [
    pytest.mark.replicas,
    pytest.mark.django_db(transaction=True, databases=["default", "replica", "replica2"]),
]

REPLICAS = ["replica", "replica2"]


@pytest.fixture(scope="module", autouse=True)
def replica2_alias(scaleops_services: Services, django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """A "replica2" alias on the launcher's second standby, on the test database (as "replica" is).

    Module-scoped, so it exists before pytest-django checks the test's ``databases``.
    """
    extra = scaleops_services.extra_replicas
    server = extra[0] if extra else scaleops_services.add_replica()
    if not server.is_running():
        server.start()
    default = connections["default"].settings_dict
    entry = database_from_url(server.url, TEST={"MIRROR": "default"}, OPTIONS={"connect_timeout": 2})
    entry["NAME"] = default["NAME"]
    configured = connections.configure_settings({"default": copy.deepcopy(default), "replica2": entry})["replica2"]
    settings.DATABASES["replica2"] = configured
    connections.settings["replica2"] = configured
    with django_db_blocker.unblock():
        # A record of its own: right after the base backup's WAL switch, the primary's insert
        # position is the next segment's start, which replay reaches only with the next record.
        raw_scalar("default", "SELECT pg_logical_emit_message(false, 'scaleops', '')")
        target = _primary_lsn()
        wait_until(lambda: _replayed("replica2", target), message="replica2 replaying the test database")
    yield
    with django_db_blocker.unblock():
        connections["replica2"].close()
    del connections["replica2"]
    connections.settings.pop("replica2", None)
    settings.DATABASES.pop("replica2", None)  # often the same dict


@pytest.fixture
def standbys(scaleops_services: Services) -> Iterator[dict[str, PostgresServer]]:
    """The two standbys by alias; after the test both run and replay without delay."""
    servers = {"replica": scaleops_services.replica, "replica2": scaleops_services.extra_replicas[0]}
    yield servers
    for server in servers.values():
        if not server.is_running():
            server.start()
        server.set_apply_delay(None)
    for alias in REPLICAS:
        connections[alias].close()


def routed(**extra: Any) -> Any:
    return router_settings(SCALEOPS_ROUTER_REPLICA_ALIASES=REPLICAS, **extra)


def _primary_lsn() -> int:
    return parse_lsn(raw_scalar("default", "SELECT pg_current_wal_insert_lsn()::text"))


def _replayed(alias: str, lsn: int) -> bool:
    try:
        return parse_lsn(raw_scalar(alias, "SELECT pg_last_wal_replay_lsn()::text")) >= lsn
    except Exception:
        connections[alias].close()
        return False


def committed_note(body: str) -> Note:
    """A note both standbys have replayed, written without pinning this context."""
    with use_primary():
        note = Note.objects.using("default").create(body=body)
    lsn = _primary_lsn()
    for alias in REPLICAS:
        wait_until(lambda alias=alias: _replayed(alias, lsn), message=f"{alias} replaying")
    reset_routing_state()
    return note


class _Figures:
    def __init__(self, figures: dict[str, Any]) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        return prometheus_families(self.figures)


def exposition(figures: dict[str, Any]) -> str:
    """The router's figures as /metrics shows them (Prometheus text format)."""
    registry = CollectorRegistry()
    registry.register(_Figures(figures))
    return generate_latest(registry).decode()


def _states(status: dict[str, Any]) -> dict[str, str]:
    return {alias: status["replicas"][alias]["state"] for alias in REPLICAS}


def fresh_reads(pk: int, count: int) -> Counter[str]:
    """``count`` reads, each as a new client (no write position, no request replica)."""
    with record_reads() as log:
        for _ in range(count):
            reset_routing_state()
            assert Note.objects.get(pk=pk).body
    return Counter(log.aliases)


def test_weighted_round_robin_follows_the_weights():
    with routed(SCALEOPS_ROUTER_REPLICA_WEIGHTS={"replica": 1, "replica2": 3}), fresh_routing():
        note = committed_note("weighted")
        reads = fresh_reads(note.pk, 40)
        assert reads == Counter({"replica2": 30, "replica": 10})
        status = replica_status()
        assert {alias: status["replicas"][alias]["reads"] for alias in REPLICAS} == {"replica": 10, "replica2": 30}
        assert {alias: status["replicas"][alias]["weight"] for alias in REPLICAS} == {"replica": 1, "replica2": 3}
        exposed = exposition(replica_status())
        assert 'scaleops_replica_weight{alias="replica2"} 3.0' in exposed
        assert 'scaleops_router_reads_total{alias="replica2",route="replica"} 30.0' in exposed
    with routed(SCALEOPS_ROUTER_REPLICA_WEIGHTS={"replica": 0}), fresh_routing():
        assert fresh_reads(note.pk, 10) == Counter({"replica2": 10})


def test_a_stopped_standby_gives_its_share_to_the_other_not_the_primary(standbys: dict[str, PostgresServer]):
    with routed(SCALEOPS_ROUTER_REPLICA_WEIGHTS={"replica": 1, "replica2": 3}), fresh_routing():
        note = committed_note("stopped")
        standbys["replica2"].stop("immediate")
        reads = fresh_reads(note.pk, 20)
        assert reads == Counter({"replica": 20})
        status = replica_status()
        assert status["replicas"]["replica2"]["state"] == "down"
        assert status["replicas"]["replica"]["state"] == "healthy"
        assert status["primary_reads"] == 0
        assert status["all_replicas_down"] is False

        standbys["replica2"].start()
        started = time.monotonic()
        wait_until(lambda: replica_status()["replicas"]["replica2"]["state"] == "healthy", message="re-admission")
        assert time.monotonic() - started < 15
        connections["replica2"].close()
        assert fresh_reads(note.pk, 8) == Counter({"replica2": 6, "replica": 2})


def test_read_your_writes_uses_the_standby_that_replayed_not_the_primary(standbys: dict[str, PostgresServer]):
    # The delayed standby has the bigger weight, so it is asked first and found behind.
    with routed(SCALEOPS_ROUTER_REPLICA_WEIGHTS={"replica": 5, "replica2": 1}), fresh_routing():
        standbys["replica"].set_apply_delay("3s")
        note = Note.objects.create(body="mine")
        Note.objects.filter(pk=note.pk).update(body="mine, edited")
        state = current_state()
        with record_reads() as log:
            # Resolving the write position happens at the first read; wait for replica2 to have it.
            wait_until(
                lambda: Note.objects.filter(pk=note.pk, body="mine, edited").exists() and log.aliases[-1] == "replica2",
                timeout=10,
                message="a read answered by replica2",
            )
        assert state.min_lsn
        assert not _replayed("replica", state.min_lsn)  # the other standby does not have it yet
        assert "replica" not in log.aliases  # never the stale one
        assert replica_status()["replicas"]["replica"]["state"] == "healthy"  # behind this client only


def test_a_standby_lagging_beyond_the_limits_is_skipped(standbys: dict[str, PostgresServer]):
    # An idle primary's last WAL (in buffers, synchronous_commit off) puts a healthy standby a few
    # bytes behind for a moment: the byte limit is set well above that, below what is held back.
    limits = {"SCALEOPS_ROUTER_MAX_LAG_SECONDS": 0.5, "SCALEOPS_ROUTER_MAX_LAG_BYTES": 64 * 1024}
    with routed(SCALEOPS_ROUTER_REPLICA_WEIGHTS={"replica": 3, "replica2": 1}, **limits), fresh_routing():
        note = committed_note("lagging")
        standbys["replica"].set_apply_delay("10s")
        with use_primary():
            Note.objects.using("default").create(body="wal to replay")  # replay stops before its commit
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT pg_logical_emit_message(false, 'lag', repeat('x', 256 * 1024))")
        reset_routing_state()
        # replica2 is behind for a moment too, until the WAL reaches it: wait for it to be back.
        wait_until(
            lambda: _states(replica_status(refresh=True)) == {"replica": "lagging", "replica2": "healthy"},
            timeout=8,
            message="replica lagging, replica2 healthy",
        )
        status = replica_status()["replicas"]
        assert status["replica"]["lag_bytes"] > 0
        assert status["replica2"]["state"] == "healthy"
        assert fresh_reads(note.pk, 12) == Counter({"replica2": 12})


# The routers' health monitor threads use ``random`` for jitter while Hypothesis generates.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_no_stale_read_after_own_write_whatever_the_standbys_do(standbys: dict[str, PostgresServer]):
    """Differential: after each of its own writes, a client's reads through the router answer what
    the primary answers, while the standbys are delayed, undelayed and stopped in between."""
    bodies = st.text(st.characters(exclude_characters="\x00"), max_size=30)  # PostgreSQL text holds no NUL
    events = st.sampled_from(["write", "read", "read", "delay", "undelay", "stop", "start"])

    @hypothesis_settings(
        max_examples=6,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.lists(st.tuples(events, st.sampled_from(REPLICAS), bodies), min_size=3, max_size=10))
    def run(steps: list[tuple[str, str, str]]) -> None:
        with routed(), fresh_routing():
            note = Note.objects.create(body="start")
            for event, alias, text in steps:
                server = standbys[alias]
                if event == "write":
                    Note.objects.filter(pk=note.pk).update(body=text)
                elif event == "read":
                    routed_body = Note.objects.get(pk=note.pk).body
                    truth = Note.objects.using("default").get(pk=note.pk).body
                    assert routed_body == truth
                elif event == "delay":
                    server.set_apply_delay("2s")
                elif event == "undelay":
                    server.set_apply_delay(None)
                elif event == "stop" and server.is_running():
                    server.stop("immediate")
                elif event == "start" and not server.is_running():
                    server.start()
            assert Note.objects.get(pk=note.pk).body == Note.objects.using("default").get(pk=note.pk).body
        for server in standbys.values():
            if not server.is_running():
                server.start()
            server.set_apply_delay(None)

    run()


# One worker process of a web server: the test settings, a "replica2" alias, a pool with shared
# health; it prints its view of the replicas as a JSON line every 0.1 s until stdin closes.
WORKER = """
import json, os, sys, threading, time
import django
from django.conf import settings

django.setup()
from django.db import connections
from django_scaleops.testing.env import database_from_url

entry = database_from_url(os.environ["REPLICA2_URL"], TEST={"MIRROR": "default"})
connections.settings["replica2"] = connections.configure_settings(
    {"default": dict(connections.settings["default"]), "replica2": entry}
)["replica2"]
settings.SCALEOPS_ROUTER_HEALTH_CACHE_ALIAS = "default"
settings.SCALEOPS_ROUTER_READMIT_CHECKS = 3
settings.SCALEOPS_ROUTER_CHECK_INTERVAL = 30

from django_scaleops.replicas.routing import ReplicaPool

pool = ReplicaPool("default", ["replica", "replica2"])
pool.ensure_monitor()
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
while not done.wait(0.1):
    status = pool.status()
    states = {alias: values["state"] for alias, values in status["replicas"].items()}
    print(json.dumps({"states": states, **status["health"]}), flush=True)
pool.stop()
"""


class Worker:
    def __init__(self) -> None:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.latest: dict[str, Any] = {}
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.latest = json.loads(line)

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def test_shared_health_across_worker_processes_one_checks_and_a_restarted_standby_returns_within_15s(
    standbys: dict[str, PostgresServer],
):
    """Three worker processes sharing only Redis, with the default shared-health settings: one holds
    the lease and checks, the others take its findings; a standby stopped and started again is back
    in all of them within 15 s, and the others never check a replica once the snapshot is there."""
    workers = [Worker() for _ in range(3)]
    try:
        # A worker that finds no snapshot yet (at start) checks once for itself; from then on only
        # the lease holder does.
        wait_until(
            lambda: (
                sorted(w.latest.get("role", "") for w in workers) == ["follower", "follower", "leader"]
                and all(w.latest["snapshot_at"] for w in workers if w.latest["role"] == "follower")
            ),
            timeout=20,
            message="one leader, two followers with its snapshot",
        )
        before = [w.latest["checks_run"] for w in workers]
        time.sleep(2.6)  # more than one interval (2 s), jitter included
        checked = [w.latest["checks_run"] - b for w, b in zip(workers, before, strict=True)]
        assert sorted(c > 0 for c in checked) == [False, False, True], checked

        standbys["replica2"].stop("immediate")
        wait_until(lambda: all(w.latest["states"]["replica2"] == "down" for w in workers), timeout=10)
        standbys["replica2"].start()
        back = time.monotonic()
        wait_until(
            lambda: all(w.latest["states"] == dict.fromkeys(REPLICAS, "healthy") for w in workers),
            timeout=15,
            message="replica2 healthy in every worker",
        )
        assert time.monotonic() - back < 15
        roles = [w.latest["role"] for w in workers]
        followers = [i for i, role in enumerate(roles) if role == "follower"]
        assert len(followers) == 2
        assert [workers[i].latest["checks_run"] for i in followers] == [before[i] for i in followers]
    finally:
        for worker in workers:
            worker.stop()


def test_replica_status_command_shows_each_standby(standbys: dict[str, PostgresServer]):
    with routed(SCALEOPS_ROUTER_REPLICA_WEIGHTS={"replica2": 2}), fresh_routing():
        out = StringIO()
        call_command("replica_status", "--json", stdout=out)
        shown = json.loads(out.getvalue())["replicas"]
        assert {alias: (shown[alias]["state"], shown[alias]["weight"]) for alias in REPLICAS} == {
            "replica": ("healthy", 1),
            "replica2": ("healthy", 2),
        }
        standbys["replica2"].stop("immediate")
        table = StringIO()
        with pytest.raises(CommandError, match=r"not healthy: replica2$"):
            call_command("replica_status", stdout=table)
        rows = {line.split()[0]: line.split()[1] for line in table.getvalue().splitlines()[2:]}
        assert rows == {"replica": "healthy", "replica2": "down"}
