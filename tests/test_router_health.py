"""Replica health and failover against real servers: stop the replica mid-loop, hot-standby
conflicts, lag classification, status command, metrics."""

from __future__ import annotations

import json
import time
from io import StringIO
from typing import Any

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, OperationalError, connections

from django_scaleops import metrics, signals
from django_scaleops.replicas.failover import is_retryable
from django_scaleops.replicas.health import DOWN, HEALTHY, LAGGING, RECOVERING, CheckResult
from django_scaleops.replicas.routing import get_pool
from django_scaleops.routers import replica_status, reset_routing_state, use_primary
from tests.router_helpers import (
    SLEEP_ON_STANDBY,
    fresh_routing,
    port_of,
    primary_locks_soon,
    router_settings,
    standby_cancels_conflicts,
    wait_for_replay,
    wait_until,
)
from tests.routerapp.models import Note
from tests.routerapp.views import read_note

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "replica"]),
    pytest.mark.services,
]


def committed_note(body: str = "seen by all") -> Note:
    with use_primary():
        note = Note.objects.using("default").create(body=body)
    wait_for_replay()
    # Someone else's write: this context must not stay pinned behind WAL written since.
    reset_routing_state()
    return note


@pytest.fixture
def transitions():
    seen: list[tuple[str | None, str]] = []

    def receiver(sender: Any, alias: str | None, state: str, **kwargs: Any) -> None:
        seen.append((alias, state))

    signals.replica_state_changed.connect(receiver, dispatch_uid="test-router-transitions")
    yield seen
    signals.replica_state_changed.disconnect(dispatch_uid="test-router-transitions")


def replica_state() -> str:
    state: str = replica_status()["replicas"]["replica"]["state"]
    return state


def restart_replica(services: Any) -> None:
    services.replica.start()
    connections["replica"].close()
    wait_for_replay(timeout=60)


def test_replica_killed_during_250_reads_fails_none_and_is_readmitted(services, transitions):
    with router_settings(), fresh_routing():
        note = committed_note()
        ports: list[int] = []
        try:
            for i in range(250):
                if i == 50:
                    services.replica.stop("immediate")
                found = read_note(note.pk)
                assert found is not None, f"read {i} failed"
                ports.append(found["port"])
            status = replica_status()
            assert status["replicas"]["replica"]["state"] == DOWN
            assert status["all_replicas_down"]
            assert metrics.collect()["replicas"]["replicas"]["replica"]["state"] == DOWN
            with pytest.raises(CommandError, match="degraded") as failed:
                call_command("replica_status", stdout=StringIO())
            assert failed.value.returncode == 1
        finally:
            restart_replica(services)
        # Whichever noticed first, the monitor or a failed read, no read failed.
        assert ports[:50] == [port_of("replica")] * 50
        assert ports[50:] == [port_of("default")] * 200
        wait_until(lambda: replica_state() == HEALTHY, message="the replica to be re-admitted")
        assert transitions.index(("replica", DOWN)) < transitions.index(("replica", RECOVERING))
        assert transitions.index(("replica", RECOVERING)) < transitions.index(("replica", HEALTHY))
        assert (None, "primary_fallback") in transitions
        assert (None, "replicas_available") in transitions
        reset_routing_state()
        assert read_note(note.pk) == {"body": "seen by all", "port": port_of("replica")}
        out = StringIO()
        call_command("replica_status", stdout=out)
        assert "healthy" in out.getvalue()
        out = StringIO()
        call_command("replica_status", "--json", stdout=out)
        assert json.loads(out.getvalue())["replicas"]["replica"]["state"] == HEALTHY


def test_read_failing_mid_statement_is_retried_and_refused_connection_skipped(services):
    # A long interval: only the router itself can notice (the first check ran at start).
    with router_settings(SCALEOPS_ROUTER_CHECK_INTERVAL=3600), fresh_routing():
        pool = get_pool()
        assert pool is not None
        note = committed_note()
        assert read_note(note.pk)["port"] == port_of("replica")
        wait_until(lambda: replica_status()["replicas"]["replica"]["last_check"], message="the first check")
        # 1. The replica dies under an open connection: the statement fails and is retried.
        services.replica.stop("immediate")
        try:
            assert read_note(note.pk) == {"body": "seen by all", "port": port_of("default")}
            status = replica_status()["replicas"]["replica"]
            assert (status["state"], status["failovers"]) == (DOWN, 1)
            assert status["last_error"].startswith("read failed: OperationalError")
        finally:
            restart_replica(services)
        pool.check_all()
        pool.check_all()
        assert replica_state() == HEALTHY
        reset_routing_state()
        assert read_note(note.pk)["port"] == port_of("replica")
        # 2. The replica refuses new connections: it is skipped before any statement runs.
        services.replica.stop("immediate")
        try:
            connections["replica"].close()
            assert read_note(note.pk) == {"body": "seen by all", "port": port_of("default")}
            status = replica_status()["replicas"]["replica"]
            assert (status["state"], status["failovers"]) == (DOWN, 1)
            assert status["last_error"].startswith("connect failed")
        finally:
            restart_replica(services)


def test_hot_standby_conflict_is_retried_on_the_primary_and_the_replica_stays_in(services):
    with standby_cancels_conflicts(services), router_settings(SCALEOPS_ROUTER_CHECK_INTERVAL=3600), fresh_routing():
        note = committed_note()
        with primary_locks_soon("routerapp_note"):
            rows = list(
                Note.objects.raw(f"SELECT id, body, inet_server_port() AS port, {SLEEP_ON_STANDBY} FROM routerapp_note")
            )
        assert [(row.body, vars(row)["port"]) for row in rows] == [("seen by all", port_of("default"))]
        status = replica_status()["replicas"]["replica"]
        assert (status["state"], status["failovers"], status["conflicts"]) == (HEALTHY, 1, 1)
        assert status["last_error"] == ""
        wait_for_replay()
        assert read_note(note.pk) == {"body": "seen by all", "port": port_of("replica")}


def test_lag_needs_both_time_and_bytes_and_readmission_needs_good_checks():
    with router_settings(
        # 32 KB: above the primary's own background records (a running-transactions snapshot every
        # 15 s, a checkpoint, autovacuum), which may land at any moment, below the write made while
        # replay is paused.
        SCALEOPS_ROUTER_CHECK_INTERVAL=3600,
        SCALEOPS_ROUTER_MAX_LAG_SECONDS=0,
        SCALEOPS_ROUTER_MAX_LAG_BYTES=32 * 1024,
    ):
        pool = get_pool()
        assert pool is not None
        committed_note()
        time.sleep(1.1)
        # Idle primary: the last replayed commit is old, but nothing is waiting to be replayed. A
        # background record may land between the wait and the check: a few tries, and one must see
        # the replica fully caught up.
        health = pool.health["replica"]
        seen = []
        for _ in range(5):
            wait_for_replay()
            pool.check_all()
            seen.append((health.state, health.lag_bytes, health.lag_seconds))
            if seen[-1] == (HEALTHY, 0, 0.0):
                break
        assert seen[-1] == (HEALTHY, 0, 0.0), seen
        connections["replica"].ensure_connection()
        connections["replica"].connection.execute("SELECT pg_wal_replay_pause()")
        try:
            with use_primary():
                Note.objects.bulk_create(Note(body=f"behind {i}") for i in range(2000))
            time.sleep(0.3)
            pool.check_all()
            assert health.state == LAGGING
            assert (health.lag_bytes or 0) > 32 * 1024
            assert (health.lag_seconds or 0) > 0
        finally:
            connections["replica"].connection.execute("SELECT pg_wal_replay_resume()")
        wait_for_replay()
        pool.check_all()
        assert (health.state, health.good_checks) == (RECOVERING, 1)
        pool.check_all()
        assert (health.state, health.good_checks) == (HEALTHY, 2)


def test_lag_classification_matrix():
    with router_settings(
        SCALEOPS_ROUTER_CHECK_INTERVAL=3600,
        SCALEOPS_ROUTER_MAX_LAG_SECONDS=5,
        SCALEOPS_ROUTER_MAX_LAG_BYTES=1000,
        SCALEOPS_ROUTER_READMIT_CHECKS=3,
    ):
        pool = get_pool()
        assert pool is not None
        cases = [
            (CheckResult(ok=True, lag_seconds=60, lag_bytes=10), HEALTHY),  # old commit, nothing to replay
            (CheckResult(ok=True, lag_seconds=1, lag_bytes=10**6), HEALTHY),  # a burst, replaying fast
            (CheckResult(ok=True, lag_seconds=60, lag_bytes=10**6), LAGGING),
            (CheckResult(ok=True), RECOVERING),
            (CheckResult(ok=False, error="refused"), DOWN),
            (CheckResult(ok=True), RECOVERING),
            (CheckResult(ok=True), RECOVERING),
            (CheckResult(ok=True), HEALTHY),  # third good check in a row
        ]
        for result, expected in cases:
            pool.record_check("replica", result)
            assert pool.health["replica"].state == expected, result


def test_retryable_errors_are_connection_errors_and_standby_conflicts():
    def django_error(cls: type[Exception], cause: Exception) -> Exception:
        exc = cls(str(cause))
        exc.__cause__ = cause
        return exc

    assert is_retryable(django_error(OperationalError, psycopg.errors.SerializationFailure("conflict")))
    assert is_retryable(django_error(OperationalError, psycopg.errors.AdminShutdown("shutdown")))
    assert is_retryable(django_error(OperationalError, psycopg.OperationalError("server closed the connection")))
    assert not is_retryable(django_error(OperationalError, psycopg.errors.QueryCanceled("statement timeout")))
    assert not is_retryable(django_error(IntegrityError, psycopg.errors.UniqueViolation("duplicate")))
