"""Shared plumbing of the router tests: settings, replay control, waiting for replication."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from django.db import connections
from django.test import override_settings

from django_scaleops.replicas.state import reset_routing_state

ROUTER = "django_scaleops.routers.PrimaryReplicaRouter"
MIDDLEWARE = "django_scaleops.replicas.middleware.ReplicaRoutingMiddleware"


def router_settings(**extra: Any) -> override_settings:
    values: dict[str, Any] = {
        "DATABASE_ROUTERS": [ROUTER],
        "SCALEOPS_ROUTER_REPLICA_ALIASES": ["replica"],
        "SCALEOPS_ROUTER_CHECK_INTERVAL": 0.2,
        "SCALEOPS_ROUTER_CHECK_TIMEOUT": 1.0,
        "SCALEOPS_ROUTER_READMIT_CHECKS": 2,
    }
    values.update(extra)
    return override_settings(**values)


def port_of(alias: str) -> int:
    return int(connections[alias].settings_dict["PORT"])


def raw_scalar(alias: str, sql: str) -> Any:
    # Straight on the psycopg connection: no router, no execute wrappers.
    connection = connections[alias]
    connection.ensure_connection()
    row = connection.connection.execute(sql).fetchone()
    return row[0] if row else None


def wait_for_replay(timeout: float = 20.0) -> None:
    """Wait until the replica has replayed everything the primary wrote so far."""
    target = raw_scalar("default", "SELECT pg_current_wal_insert_lsn()::text")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if raw_scalar("replica", f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"):
                return
        except Exception:
            connections["replica"].close()
        time.sleep(0.05)
    raise AssertionError(f"replica did not replay up to {target} within {timeout}s: {_replay_diagnosis()}")


def _replay_diagnosis() -> str:
    """What may hold replay back, for the failure message."""
    try:
        connections["replica"].close()
        paused = raw_scalar("replica", "SELECT pg_is_wal_replay_paused()")
        received = raw_scalar("replica", "SELECT pg_last_wal_receive_lsn()::text")
        replayed = raw_scalar("replica", "SELECT pg_last_wal_replay_lsn()::text")
        sessions = raw_scalar(
            "replica",
            "SELECT string_agg(format('%s %s %s: %s', pid, state, xact_start, left(query, 80)), '; ')"
            " FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        return f"paused={paused} received={received} replayed={replayed} sessions=[{sessions}]"
    except Exception as exc:
        return f"(no diagnosis: {type(exc).__name__}: {exc})"


def wait_until(predicate: Any, timeout: float = 20.0, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {message}")


@contextmanager
def replay_paused() -> Iterator[None]:
    """Pause WAL replay on the replica: it keeps receiving, but shows nothing new."""
    wait_for_replay()
    raw_scalar("replica", "SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        raw_scalar("replica", "SELECT pg_wal_replay_resume()")


@contextmanager
def fresh_routing() -> Iterator[None]:
    reset_routing_state()
    try:
        yield
    finally:
        reset_routing_state()


# In a query's select list: sleeps on the standby only, so a retry on the primary answers at once.
SLEEP_ON_STANDBY = "CASE WHEN pg_is_in_recovery() THEN pg_sleep(2) END"


@contextmanager
def standby_cancels_conflicts(services: Any) -> Iterator[None]:
    """Make the standby cancel a query that blocks replay at once (max_standby_streaming_delay 0)."""
    services.replica.write_config({"max_standby_streaming_delay": "0"})
    services.replica.reload()
    try:
        wait_until(lambda: raw_scalar("replica", "SHOW max_standby_streaming_delay") == "0", message="the reload")
        yield
    finally:
        services.replica.write_config()
        services.replica.reload()


@contextmanager
def primary_locks_soon(table: str, after: float = 0.4) -> Iterator[None]:
    """In the background, after ``after`` s, take an ACCESS EXCLUSIVE lock on ``table`` on the primary.

    Replaying that lock on the standby conflicts with any query there that reads ``table``.
    """
    params = dict(connections["default"].get_connection_params())

    def lock() -> None:
        time.sleep(after)
        with psycopg.connect(**params) as conn, conn.transaction():
            conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")

    locker = threading.Thread(target=lock)
    locker.start()
    try:
        yield
    finally:
        locker.join()


def terminate_backend(alias: str, pid: int) -> None:
    """End one server session the way an administrator would (SQLSTATE 57P01 for its client)."""
    params = dict(connections[alias].get_connection_params())
    with psycopg.connect(**params, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
