"""Replica faults without collateral damage, against real servers: a recovery conflict costs one
read on the primary and nothing else; a dead connection takes the replica out; a server-side
cursor is rerun only when that cannot repeat or drop a row; a replaced standby starts from
nothing (no replay position or health record of the server it replaced)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from django.db import IntegrityError, InterfaceError, OperationalError, connections
from django.db.models.expressions import RawSQL

from django_scaleops.replicas import health
from django_scaleops.replicas.failover import CONFLICT, CONNECTION, failure_kind
from django_scaleops.replicas.health import (
    DOWN,
    HEALTHY,
    IDENTITY_SQL,
    PROBE_SQL,
    RECOVERING,
    CheckConnection,
    ServerIdentity,
    check_replica,
    fetch_identified,
)
from django_scaleops.replicas.routing import ReplicaPool, get_pool
from django_scaleops.replicas.state import current_state
from django_scaleops.routers import ReplicaStreamBroken, replica_status, reset_routing_state, use_primary
from tests.router_helpers import (
    SLEEP_ON_STANDBY,
    fresh_routing,
    port_of,
    primary_locks_soon,
    raw_scalar,
    router_settings,
    standby_cancels_conflicts,
    terminate_backend,
    wait_for_replay,
    wait_until,
)
from tests.routerapp.models import Note
from tests.routerapp.views import read_note

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "replica"]),
    pytest.mark.services,
]


@pytest.fixture
def pool() -> Iterator[ReplicaPool]:
    # Checks only when a test runs them (after the one the monitor runs at start).
    with router_settings(SCALEOPS_ROUTER_CHECK_INTERVAL=3600, SCALEOPS_ROUTER_MAX_LAG_SECONDS=3600), fresh_routing():
        current = get_pool()
        assert current is not None
        current.ensure_monitor()
        wait_until(lambda: current.health["replica"].last_check is not None, message="the first check")
        yield current


def committed_notes(count: int) -> list[int]:
    """Notes the replica has replayed, written without pinning this context to the primary."""
    with use_primary():
        pks = [note.pk for note in Note.objects.using("default").bulk_create(Note(body=f"n{i}") for i in range(count))]
    wait_for_replay()
    reset_routing_state()
    return pks


def replica_health() -> dict[str, Any]:
    status: dict[str, Any] = replica_status()["replicas"]["replica"]
    return status


def with_port() -> Any:
    return Note.objects.annotate(port=RawSQL("inet_server_port()", ())).order_by("pk")


@contextmanager
def terminated_after_execute(alias: str) -> Iterator[None]:
    """The session of ``alias`` is ended by the server right after its next statement ran.

    Django's execute-wrapper hook only times the fault: PostgreSQL itself ends the session, and
    the client sees it at its next fetch, as after a standby crash between two fetches.
    """
    done = False

    def end_session(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        nonlocal done
        result = execute(sql, params, many, context)
        if not done:
            done = True
            terminate_backend(alias, context["connection"].connection.info.backend_pid)
        return result

    with connections[alias].execute_wrapper(end_session):
        yield
    assert done, f"no statement ran on {alias}"


def restart_replica(services: Any) -> None:
    services.replica.start()
    connections["replica"].close()
    wait_for_replay(timeout=60)


# ---- recovery conflicts versus connection failures ----------------------------------------------


def test_recovery_conflict_costs_one_read_on_the_primary_a_stopped_standby_takes_it_out(services, pool):
    pks = committed_notes(3)
    wanted = [(pk, port_of("default")) for pk in pks]
    session = connections["replica"].connection.info.backend_pid
    # The sleep is selected (an unselected annotation would be left out of the query).
    slow = with_port().annotate(slept=RawSQL(SLEEP_ON_STANDBY, ())).values_list("pk", "port", "slept")
    with standby_cancels_conflicts(services):
        # A client-side cursor: PostgreSQL cancels the statement (40001) while it runs.
        with primary_locks_soon("routerapp_note"):
            rows = [(pk, port) for pk, port, _ in slow]
        assert rows == wanted
        # A server-side cursor (.iterator()): cancelled while DECLARE runs the query.
        wait_for_replay()
        with primary_locks_soon("routerapp_note"):
            streamed = [(pk, port) for pk, port, _ in slow.iterator()]
        assert streamed == wanted
    status = replica_health()
    assert (status["state"], status["conflicts"], status["failovers"], status["last_error"]) == (HEALTHY, 2, 2, "")
    assert not replica_status()["all_replicas_down"]
    # Still in rotation, on the same session: the next read is the replica's.
    assert connections["replica"].connection.info.backend_pid == session
    wait_for_replay()
    assert read_note(pks[0]) == {"body": "n0", "port": port_of("replica")}
    # A connection failure is another matter: a stopped standby is out at once.
    services.replica.stop("immediate")
    try:
        assert read_note(pks[0]) == {"body": "n0", "port": port_of("default")}
        status = replica_health()
        assert (status["state"], status["conflicts"], status["failovers"]) == (DOWN, 2, 3)
        assert status["last_error"].startswith("read failed: OperationalError")
    finally:
        restart_replica(services)


def test_failure_kinds():
    def django_error(cls: type[Exception], cause: Exception) -> Exception:
        exc = cls(str(cause))
        exc.__cause__ = cause
        return exc

    conflicts = [psycopg.errors.SerializationFailure("conflict"), psycopg.errors.DeadlockDetected("buffer pin")]
    connection_failures = [
        psycopg.OperationalError("server closed the connection unexpectedly"),  # no SQLSTATE: client side
        psycopg.errors.ConnectionTimeout("connection timeout expired"),
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),  # 57P01
        psycopg.errors.CrashShutdown("crash shutdown"),  # 57P02
        psycopg.errors.CannotConnectNow("the database system is starting up"),  # 57P03
        psycopg.errors.ConnectionFailure("connection failure"),  # 08006
    ]
    for cause in conflicts:
        assert failure_kind(django_error(OperationalError, cause)) == CONFLICT, cause
        assert failure_kind(cause) == CONFLICT, cause
    for cause in connection_failures:
        assert failure_kind(django_error(OperationalError, cause)) == CONNECTION, cause
        assert failure_kind(cause) == CONNECTION, cause
    assert failure_kind(InterfaceError("connection already closed")) == CONNECTION
    assert failure_kind(django_error(OperationalError, psycopg.errors.QueryCanceled("statement timeout"))) is None
    assert failure_kind(django_error(IntegrityError, psycopg.errors.UniqueViolation("duplicate"))) is None


# ---- server-side cursors ---------------------------------------------------------------------------


def test_stream_failing_before_its_first_row_is_rerun_elsewhere(pool):
    pks = committed_notes(25)
    cursors: list[type] = []

    def cursor_kind(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        cursors.append(type(context["cursor"].cursor))
        return execute(sql, params, many, context)

    with terminated_after_execute("replica"), connections["default"].execute_wrapper(cursor_kind):
        rows = list(with_port().values_list("pk", "port").iterator(chunk_size=10))
    # Every row once, in order, all from the primary: nothing had been returned from the replica.
    assert rows == [(pk, port_of("default")) for pk in pks]
    # Still streamed there: a server-side cursor on the primary, not every row in memory at once.
    assert len(cursors) == 1
    assert issubclass(cursors[0], psycopg.ServerCursor)
    status = replica_health()
    assert (status["state"], status["failovers"]) == (DOWN, 1)
    assert "AdminShutdown" in status["last_error"]


def test_stream_broken_after_rows_raises_and_never_repeats_or_drops_rows(pool):
    pks = committed_notes(25)
    seen: list[tuple[int, int]] = []

    def consume() -> None:
        for i, row in enumerate(with_port().values_list("pk", "port").iterator(chunk_size=10)):
            seen.append(row)
            if i == 0:
                # The first fetch brought 10 rows; the session ends before the second.
                terminate_backend("replica", connections["replica"].connection.info.backend_pid)

    with pytest.raises(ReplicaStreamBroken) as broken:
        consume()
    assert seen == [(pk, port_of("replica")) for pk in pks[:10]]
    assert (broken.value.alias, broken.value.rows) == ("replica", 10)
    message = str(broken.value)
    assert "the stream of rows from replica 'replica' broke after 10 rows" in message
    assert "cannot be resumed transparently" in message
    assert isinstance(broken.value.__cause__, psycopg.errors.AdminShutdown)
    assert replica_health()["state"] == DOWN
    # The dead session is gone: a new read reconnects (the primary answers while it is down).
    assert read_note(pks[0]) == {"body": "n0", "port": port_of("default")}


# ---- a replaced server -----------------------------------------------------------------------------


def test_a_recloned_standby_does_not_inherit_the_replay_position_or_health(services, pool):
    committed_notes(1)
    old_server = pool.health["replica"].checked
    assert old_server is not None
    # The replacement is copied from the primary now, before the write below: it lacks that write.
    clone = services.clone_primary()
    mine = Note.objects.create(body="after the clone")
    wait_for_replay()
    # The old standby has it, and the router knows its position is past this client's write.
    assert read_note(mine.pk) == {"body": "after the clone", "port": port_of("replica")}
    written = current_state().min_lsn
    assert pool.health["replica"].replay_lsn >= written
    try:
        # The same address, another server. It holds back every commit replayed from now on.
        services.reclone_replica(clone, config={"recovery_min_apply_delay": "'1h'"})
        # A pooled connection to the old server would have failed (and marked the replica down);
        # a new connection is what a reconnect or a VIP hands out.
        connections["replica"].close()
        assert pool.health["replica"].state == HEALTHY
        # The new connection is matched to its server before the old position is believed.
        assert read_note(mine.pk) == {"body": "after the clone", "port": port_of("default")}
        server, replayed = pool.health["replica"].position
        assert server is not None and server != old_server
        assert (server.system_identifier, server.timeline) == (old_server.system_identifier, old_server.timeline)
        assert replayed < written
        # The monitor's check reaches the new server too: good checks start over.
        pool.check_all()
        status = replica_health()
        assert (status["state"], status["good_checks"]) == (RECOVERING, 1)
        assert status["server"]["started"] != old_server.started
        assert status["last_error"].startswith("another server answers")
        pool.check_all()
        assert replica_health()["state"] == HEALTHY
        # Re-admitted, and still not trusted with a write it has not replayed.
        assert read_note(mine.pk) == {"body": "after the clone", "port": port_of("default")}
        # (It really lacks it: a client without that write reads the new standby.)
        reset_routing_state()
        assert read_note(mine.pk) is None
    finally:
        services.replica.set_apply_delay(None)
        connections["replica"].close()
        wait_for_replay(timeout=60)


@pytest.fixture
def control_functions_revoked(services: Any) -> Iterator[str]:
    """A login role for which pg_control_system()/pg_control_checkpoint() are not granted."""
    role = "scaleops_no_control"
    functions = "FUNCTION pg_control_system(), pg_control_checkpoint()"
    database = connections["default"].settings_dict["NAME"]  # function grants are per database
    services.primary.sql(f"CREATE ROLE {role} LOGIN")
    services.primary.sql(f"REVOKE EXECUTE ON {functions} FROM PUBLIC", dbname=database)
    try:
        wait_for_replay()
        yield role
    finally:
        services.primary.sql(f"GRANT EXECUTE ON {functions} TO PUBLIC", dbname=database)
        services.primary.sql(f"DROP ROLE {role}")
        health._control_functions_granted = True


def test_without_pg_control_functions_servers_are_told_apart_by_start_time(control_functions_revoked, caplog):
    params = {**connections["replica"].get_connection_params(), "user": control_functions_revoked}
    with psycopg.connect(**params, autocommit=True) as conn:
        _, identity = fetch_identified(conn, IDENTITY_SQL)
        assert not health._control_functions_granted
        started = raw_scalar("replica", "SELECT pg_postmaster_start_time()::text")
        assert identity == ServerIdentity(None, None, started)
        (replayed,), again = fetch_identified(conn, PROBE_SQL)
        assert again == identity
        assert replayed == raw_scalar("replica", "SELECT pg_last_wal_replay_lsn()::text")
    assert "servers told apart by start time" in caplog.text


def test_a_standby_of_another_cluster_is_refused(pool):
    primary_system = int(raw_scalar("default", "SELECT system_identifier FROM pg_control_system()"))
    status = replica_health()
    # Ours: the standby reports the primary's system identifier, and so passes.
    assert status["server"]["system_identifier"] == primary_system
    params = dict(connections["replica"].get_connection_params())
    conn = CheckConnection(params, timeout=2.0)
    try:
        assert check_replica(conn, None, mirror=False).ok
        # Another cluster's primary: the same standby is not one of its standbys.
        assert conn.identity is not None
        other = ServerIdentity(primary_system + 1, 1, "2000-01-01 00:00:00+00")
        result = check_replica(conn, None, mirror=False, primary=other)
        assert not result.ok
        assert result.error == (
            f"not a standby of the primary: system identifier {primary_system}, the primary's is {primary_system + 1}"
        )
    finally:
        conn.close()
