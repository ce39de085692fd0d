"""PgBouncer: sizing, checks, the app's queries through the harness' PgBouncer (transaction
mode), live metrics, an outage and its recovery. The generated-config PgBouncer is tested in
test_pgbouncer_generated.py, fork safety in test_pgbouncer_fork.py."""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Iterator
from io import StringIO
from typing import Any

import psycopg
import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.db import DatabaseError, OperationalError, connections, transaction
from django.test import override_settings

from django_scaleops import metrics
from django_scaleops.pgbouncer import (
    PgBouncerError,
    calculate_pool_size,
    get_pool_metrics,
    validate_pool_health,
)
from django_scaleops.pgbouncer.aliases import redact_url
from django_scaleops.pgbouncer.checks import check_pgbouncer_live
from django_scaleops.pgbouncer.config import md5_secret, scram_secret
from django_scaleops.pgbouncer.metrics import clear_metrics_cache, parse_console_time
from example_project.chat.models import Message

HARNESS = {"pgbouncer": {"pool_mode": "transaction", "direct": "default"}}


@contextlib.contextmanager
def temporary_alias(alias: str, **params: Any) -> Iterator[dict[str, Any]]:
    """Add a DATABASES alias for the block (Django's override_settings cannot add aliases)."""
    configured = connections.configure_settings({"default": connections.settings["default"], alias: params})[alias]
    connections.settings[alias] = configured
    try:
        yield configured
    finally:
        if alias in connections:
            connections[alias].close()
            del connections[alias]
        del connections.settings[alias]


def pgbouncer_params(**changes: Any) -> dict[str, Any]:
    params = copy.deepcopy(connections["pgbouncer"].settings_dict)
    params.pop("TEST", None)
    params.update(changes)
    return params


def scaleops_ids(messages: list[Any]) -> list[str]:
    return sorted(str(m.id) for m in messages if m.id and m.id.startswith("scaleops."))


# ---- sizing


def test_pool_size_follows_cores_clients_and_max_connections():
    by_cores = calculate_pool_size(cores=4, spindles=1, workers=8, threads=4, max_connections=200)
    assert (by_cores.default_pool_size, by_cores.limited_by) == (9, "cores")
    assert by_cores.client_demand == 32 and by_cores.max_client_conn == 100
    assert by_cores.reserve_pool_size == 2 and by_cores.max_db_connections == 11
    assert by_cores.server_budget == 180  # 200 - 10% reserved
    assert by_cores.per_process_pool_size == 4

    by_clients = calculate_pool_size(cores=16, workers=2, threads=2)
    assert (by_clients.default_pool_size, by_clients.limited_by) == (4, "clients")

    by_server = calculate_pool_size(cores=32, workers=100, threads=8, max_connections=100, pools=10)
    assert (by_server.default_pool_size, by_server.limited_by) == (9, "max_connections")  # (100-10)//10
    assert by_server.reserve_pool_size == 0  # no room left in the budget
    assert by_server.max_client_conn == 1600
    assert any("max_connections" in note for note in by_server.notes)
    assert json.loads(json.dumps(by_server.as_dict()))["limited_by"] == "max_connections"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cores": -1}, "cores must be an integer >= 0"),
        ({"workers": 0}, "workers must be an integer >= 1"),
        ({"threads": True}, "threads must be an integer"),
        ({"max_connections": 5, "pools": 3}, "leaves no room for 3 pools"),
    ],
)
def test_pool_size_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        calculate_pool_size(**kwargs)


def test_verifiers_and_redaction():
    # RFC 7677's SCRAM-SHA-256 example derivation, with PostgreSQL's verifier layout.
    secret = scram_secret("pencil", salt=b"\x01" * 16, iterations=4096)
    assert secret.startswith("SCRAM-SHA-256$4096:AQEBAQEBAQEBAQEBAQEBAQ==$")
    assert "pencil" not in secret and scram_secret("pencil") != scram_secret("pencil")  # random salt
    assert md5_secret("app", "secret") == "md5" + __import__("hashlib").md5(b"secretapp").hexdigest()
    assert redact_url("postgresql://app:s3cret@db:6432/pgbouncer") == "postgresql://app:***@db:6432/pgbouncer"
    parsed = parse_console_time("2026-01-31 12:00:01 UTC")
    assert parsed is not None and parsed.isoformat() == "2026-01-31T12:00:01+00:00"


# ---- system checks


def test_misconfigured_aliases_fail_manage_check_with_their_ids():
    bad = pgbouncer_params(
        DISABLE_SERVER_SIDE_CURSORS=False,
        OPTIONS={"prepare_threshold": 5, "assume_role": "reporting", "options": "-c statement_timeout=5s"},
    )
    with (
        temporary_alias("bouncer_bad", **bad),
        override_settings(SCALEOPS_PGBOUNCER_ALIASES={"bouncer_bad": {}}),
    ):
        ids = scaleops_ids(run_checks())
        assert ids == ["scaleops.E502", "scaleops.E503", "scaleops.E506", "scaleops.W501"]
        with pytest.raises(SystemCheckError, match=r"scaleops\.E502"):
            call_command("check", stdout=StringIO(), stderr=StringIO())
    # The same alias in session mode keeps its session state: only the startup options remain.
    with (
        temporary_alias("bouncer_bad", **bad),
        override_settings(SCALEOPS_PGBOUNCER_ALIASES={"bouncer_bad": {"pool_mode": "session"}}),
    ):
        assert scaleops_ids(run_checks()) == []
    # PgBouncer 1.21+ with max_prepared_statements declared may carry prepared statements.
    good = pgbouncer_params(OPTIONS={"prepare_threshold": 5})
    with (
        temporary_alias("bouncer_ps", **good),
        override_settings(SCALEOPS_PGBOUNCER_ALIASES={"bouncer_ps": {"max_prepared_statements": 200}}),
    ):
        assert scaleops_ids(run_checks()) == []


def test_native_pool_traps_are_flagged_on_any_alias():
    direct = pgbouncer_params(HOST="127.0.0.1")
    with temporary_alias("empty_pool", **{**direct, "OPTIONS": {"pool": {}}}):
        assert scaleops_ids(run_checks()) == ["scaleops.E505"]
    with temporary_alias("pool_and_age", **{**direct, "CONN_MAX_AGE": 60, "OPTIONS": {"pool": True}}):
        assert scaleops_ids(run_checks()) == ["scaleops.E504"]
    with temporary_alias("pool_ok", **{**direct, "OPTIONS": {"pool": {"max_size": 4}}}):
        assert scaleops_ids(run_checks()) == []


@pytest.mark.parametrize(
    ("declared", "text"),
    [
        ({"nope": {}}, "alias 'nope' is not in DATABASES"),
        ({"pgbouncer": {"pool_mode": "sessions"}}, "pool_mode of 'pgbouncer' must be one of"),
        ({"pgbouncer": {"direct": "pgbouncer"}}, "goes through PgBouncer itself"),
        ({"pgbouncer": {"admin": "x"}}, "unknown option 'admin'"),
        ({"pgbouncer": []}, "must be a dict"),
    ],
)
def test_bad_declarations_are_e501(declared, text):
    with override_settings(SCALEOPS_PGBOUNCER_ALIASES=declared):
        messages = [m for m in run_checks() if m.id == "scaleops.E501"]
    assert messages and text in messages[0].msg


def test_live_checks_ask_pgbouncer_only_with_database():
    ps = pgbouncer_params(OPTIONS={"prepare_threshold": 5})
    declared = {"bouncer_ps": {"max_prepared_statements": 200, "pool_mode": "session"}}
    with temporary_alias("bouncer_ps", **ps), override_settings(SCALEOPS_PGBOUNCER_ALIASES=declared):
        assert check_pgbouncer_live(databases=None) == []
        # PgBouncer 1.18 cannot carry prepared statements, and it pools in transaction mode.
        assert scaleops_ids(check_pgbouncer_live(databases=["bouncer_ps"])) == ["scaleops.E508", "scaleops.E509"]
        call_command("check", stdout=StringIO())  # the static checks pass: max_prepared_statements is declared
        with pytest.raises(SystemCheckError, match=r"scaleops\.E508"):
            call_command("check", "--database", "bouncer_ps", stdout=StringIO(), stderr=StringIO())
    unreachable = {"pgbouncer": {"admin_url": "postgresql://postgres:hunter2@127.0.0.1:1/pgbouncer"}}
    with override_settings(SCALEOPS_PGBOUNCER_ALIASES=unreachable):
        messages = check_pgbouncer_live(databases=["pgbouncer"])
    assert scaleops_ids(messages) == ["scaleops.E507"]
    assert "hunter2" not in messages[0].msg and "***" in messages[0].msg
    with override_settings(SCALEOPS_PGBOUNCER_ALIASES=HARNESS):
        assert check_pgbouncer_live(databases=["pgbouncer"]) == []


# ---- the app through PgBouncer in transaction mode


@pytest.mark.django_db(transaction=True, databases=["default", "pgbouncer"])
def test_queries_iterator_and_transactions_pass_through_pgbouncer(django_user_model):
    user = django_user_model.objects.create(username="bouncer")
    Message.objects.bulk_create(Message(sender=user, body=f"m{i}") for i in range(250))
    through = Message.objects.using("pgbouncer")
    assert through.filter(sender=user).count() == 250
    bodies = [m.body for m in through.filter(sender=user).order_by("id").iterator(chunk_size=40)]
    assert bodies == [f"m{i}" for i in range(250)]
    with transaction.atomic(using="pgbouncer"):
        through.filter(body="m0").update(body="first")
        with transaction.atomic(using="pgbouncer"):  # a savepoint stays on the same server connection
            through.filter(body="m1").update(body="second")
    assert set(Message.objects.filter(body__in=["first", "second"]).values_list("body", flat=True)) == {
        "first",
        "second",
    }
    with connections["pgbouncer"].cursor() as cursor:
        cursor.execute("SHOW transaction_isolation")
        assert cursor.fetchone() is not None
    with override_settings(SCALEOPS_PGBOUNCER_ALIASES=HARNESS):
        figures = get_pool_metrics("pgbouncer")
    assert figures.version >= (1, 18, 0)
    pool = next(p for p in figures.pools if p.database == connections["default"].settings_dict["NAME"])
    assert pool.pool_mode == "transaction" and pool.pool_size == 20
    assert figures.stats[pool.database]["total_xact_count"] >= 3


@pytest.mark.django_db(databases=["default"])
def test_health_and_metrics_source_of_the_harness_pgbouncer():
    clear_metrics_cache()
    with override_settings(SCALEOPS_PGBOUNCER_ALIASES=HARNESS):
        health = validate_pool_health("pgbouncer")
        first = metrics.collect()["pgbouncer"]["pgbouncer"]
        second = metrics.collect()["pgbouncer"]["pgbouncer"]
        out = StringIO()
        call_command("pgbouncer_status", stdout=out)
    assert health.status == "ok", health.findings
    assert health.metrics is not None and health.error is None
    assert first["reachable"] is True and first["version"].startswith("1.")
    assert first == second  # cached for SCALEOPS_PGBOUNCER_METRICS_TTL
    assert "pgbouncer (PgBouncer 1." in out.getvalue() and ": OK" in out.getvalue()


@pytest.mark.services
@pytest.mark.django_db(transaction=True, databases=["default", "pgbouncer"])
def test_pgbouncer_outage_gives_a_clear_error_and_restart_recovers(services):
    clear_metrics_cache()
    services.pgbouncer.stop()
    try:
        connections["pgbouncer"].close()
        with pytest.raises(OperationalError, match=r"Connection refused|could not connect|failed"):
            connections["pgbouncer"].ensure_connection()
        with override_settings(SCALEOPS_PGBOUNCER_ALIASES=HARNESS):
            health = validate_pool_health("pgbouncer")
            assert health.status == "unhealthy"
            assert health.error and "cannot reach the PgBouncer admin console at postgresql://" in health.error
            out, err = StringIO(), StringIO()
            with pytest.raises(CommandError) as excinfo:
                call_command("pgbouncer_status", "--json", stdout=out, stderr=err)
            assert excinfo.value.returncode == 2
            report = json.loads(out.getvalue())["aliases"][0]
            assert report["status"] == "unhealthy" and report["metrics"] is None
            assert metrics.collect()["pgbouncer"]["pgbouncer"] == {"reachable": False}
            with pytest.raises(PgBouncerError, match="cannot reach"):
                get_pool_metrics("pgbouncer")
    finally:
        services.pgbouncer.start()
    clear_metrics_cache()
    connections["pgbouncer"].close()
    with connections["pgbouncer"].cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    with override_settings(SCALEOPS_PGBOUNCER_ALIASES=HARNESS):
        assert validate_pool_health("pgbouncer").status == "ok"


# ---- the traps the checks exist for, reproduced on the harness' PgBouncer 1.18


def _harness_max_prepared_statements() -> int:
    with override_settings(SCALEOPS_PGBOUNCER_ALIASES=HARNESS):
        return int(get_pool_metrics("pgbouncer").config.get("max_prepared_statements") or 0)


def test_psycopg_prepared_statements_break_behind_transaction_pooling():
    if _harness_max_prepared_statements():
        pytest.skip("this PgBouncer carries prepared statements")
    url = os.environ["PGBOUNCER_URL"]
    query = "SELECT %s::int + 1"
    with (
        psycopg.connect(url, autocommit=True, prepare_threshold=None) as a,
        psycopg.connect(url, autocommit=True, prepare_threshold=None) as b,
    ):
        for i in range(5):  # Django's default (prepare_threshold=None): fine
            assert a.execute(query, [i]).fetchone() == (i + 1,)
            assert b.execute(query, [i]).fetchone() == (i + 1,)

    def alternate_with_prepared_statements() -> None:
        with (
            psycopg.connect(url, autocommit=True, prepare_threshold=0) as a,
            psycopg.connect(url, autocommit=True, prepare_threshold=0) as b,
        ):
            for i in range(5):
                a.execute(query, [i]).fetchone()
                b.execute(query, [i]).fetchone()

    # What scaleops.E503 flags.
    with pytest.raises(psycopg.Error, match=r"prepared statement .* (already exists|does not exist)"):
        alternate_with_prepared_statements()


@pytest.mark.django_db(transaction=True, databases=["default", "pgbouncer"])
def test_server_side_cursors_break_behind_transaction_pooling(django_user_model):
    user = django_user_model.objects.create(username="cursor-owner")
    Message.objects.bulk_create(Message(sender=user, body=f"c{i}") for i in range(30))
    # The alias as scaleops.E502 would flag it: through PgBouncer with server-side cursors on.
    params = connections["pgbouncer"].settings_dict
    params["DISABLE_SERVER_SIDE_CURSORS"] = False
    # A second client of the same pool (the test database through PgBouncer).
    other = psycopg.connect(
        host=params["HOST"], port=params["PORT"], user=params["USER"], dbname=params["NAME"], prepare_threshold=None
    )
    try:
        rows = Message.objects.using("pgbouncer").filter(sender=user).order_by("id").iterator(chunk_size=10)
        assert next(rows).body == "c0"  # DECLARE ... WITH HOLD and the first FETCH, on server S1
        other.execute("SELECT 1")  # another client's open transaction now holds S1
        # Django wraps the FETCH error; closing the cursor then raises psycopg's own, unwrapped.
        with pytest.raises((DatabaseError, psycopg.Error), match=r"cursor .* does not exist"):
            list(rows)  # the next FETCH runs on another server connection
    finally:
        params["DISABLE_SERVER_SIDE_CURSORS"] = True
        other.rollback()
        other.close()
        connections["pgbouncer"].close()


def test_rows_are_read_by_column_name_across_pgbouncer_releases():
    from django_scaleops.pgbouncer.metrics import _connection, _pool

    # SHOW POOLS of 1.25: new columns (load_balance_hosts), different order; of 1.7: no maxwait_us.
    newer = {"load_balance_hosts": None, "pool_mode": "transaction", "maxwait_us": 250_000, "maxwait": 1,
             "sv_login": 0, "sv_tested": 0, "sv_used": 1, "sv_idle": 3, "sv_being_canceled": 0,
             "sv_active_cancel": 0, "sv_active": 16, "cl_waiting_cancel_req": 0, "cl_active_cancel_req": 0,
             "cl_waiting": 4, "cl_active": 16, "user": "app", "database": "chat"}  # fmt: skip
    pool = _pool(newer, 20, "session")
    assert (pool.cl_waiting, pool.sv_active, pool.maxwait_ms, pool.pool_mode) == (4, 16, 1250.0, "transaction")
    assert pool.utilisation == 0.8
    older = _pool({"database": "chat", "user": "app", "cl_waiting": 2, "maxwait": 3}, 10, "transaction")
    assert (older.maxwait_ms, older.pool_mode, older.sv_idle) == (3000.0, "transaction", 0)
    # SHOW CLIENTS of 1.23+: id, replication and prepared_statements columns added.
    client = _connection(
        {"type": "C", "user": "app", "database": "chat", "replication": "none", "state": "active",
         "addr": "10.0.0.7", "port": 51234, "connect_time": "2026-01-31 12:00:00 UTC",
         "request_time": "2026-01-31 12:00:05 UTC", "wait": 0, "wait_us": 0, "close_needed": 0,
         "ptr": "0x1", "link": "0x2", "remote_pid": 0, "tls": "", "application_name": "web",
         "prepared_statements": 0, "id": 17},
        "client",
    )  # fmt: skip
    assert client.linked and client.request_time is not None and client.request_time.second == 5
