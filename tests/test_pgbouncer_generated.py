"""A PgBouncer started from the files ``manage.py pgbouncer_config`` writes, then used: SCRAM and
md5 logins, primary and replica entries, a tiny pool under load, leaks and server churn."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.test import override_settings

from django_scaleops.pgbouncer import find_connection_leaks, get_pool_metrics, validate_pool_health
from django_scaleops.testing.services import RunAs, free_ports, wait_for_port
from tests.test_pgbouncer import temporary_alias

ROLE = "scaleops_pgb_app"
PASSWORD = "pgb-Secret-9f2e"  # must never appear in command output

pytestmark = pytest.mark.skipif(
    shutil.which("pgbouncer") is None and not os.path.exists("/usr/sbin/pgbouncer"), reason="pgbouncer is not installed"
)


@dataclass
class Bouncer:
    port: int
    folder: Path
    output: str
    test_db: str

    def url(self, dbname: str | None = None, password: str = PASSWORD) -> str:
        return f"postgresql://{ROLE}:{password}@127.0.0.1:{self.port}/{dbname or self.test_db}"


def _pgbouncer_binary() -> str:
    return shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


@contextlib.contextmanager
def running_pgbouncer(ini: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Run PgBouncer in the foreground from ``ini`` (as ``postgres`` when we are root)."""
    run_as = RunAs.detect()
    for path in (ini.parent, *ini.parent.iterdir()):
        run_as.chown(path)
    kwargs: dict[str, Any] = {}
    if run_as.uid != os.getuid():
        kwargs.update(user=run_as.uid, group=run_as.gid, extra_groups=[])
    log = open(ini.parent / "stdout.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [_pgbouncer_binary(), str(ini)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
    )
    try:
        wait_for_port(port, timeout=15)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def generate(folder: Path, port: int, *aliases: str, extra_args: tuple[str, ...] = ()) -> str:
    args = [f"--database={alias}" for alias in aliases]
    out = StringIO()
    call_command(
        "pgbouncer_config",
        *args,
        f"--output-dir={folder}",
        f"--listen-port={port}",
        # 2 x 0 cores + 2 spindles = 2 server connections: a pool small enough to saturate.
        "--cores=0",
        "--spindles=2",
        "--workers=4",
        "--threads=2",
        "--max-connections=300",
        "--set=unix_socket_dir=",
        f"--set=logfile={folder / 'pgbouncer.log'}",
        "--set=query_wait_timeout=30",
        *extra_args,
        stdout=out,
    )
    return out.getvalue()


@pytest.fixture(scope="module")
def bouncer(django_db_setup: None, django_db_blocker: Any) -> Iterator[Bouncer]:
    with django_db_blocker.unblock():
        with connections["default"].cursor() as cursor:
            cursor.execute(f"DROP ROLE IF EXISTS {ROLE}")
            cursor.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD %s", [PASSWORD])
        _wait_for_role_on_replica()
        test_db = connections["default"].settings_dict["NAME"]
        primary = {**copy.deepcopy(connections["default"].settings_dict), "USER": ROLE, "PASSWORD": PASSWORD}
        replica = {**copy.deepcopy(connections["replica"].settings_dict), "USER": ROLE, "PASSWORD": PASSWORD}
        for params in (primary, replica):
            params.pop("TEST", None)
        folder = Path(tempfile.mkdtemp(prefix="scaleops-pgb-"))
        os.chmod(folder, 0o755)
        (port,) = free_ports(1)
        try:
            with temporary_alias("app_primary", **primary), temporary_alias("app_replica", **replica):
                output = generate(folder, port, "app_primary", "app_replica")
            with running_pgbouncer(folder / "pgbouncer.ini", port):
                yield Bouncer(port, folder, output, test_db)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            with connections["default"].cursor() as cursor:
                cursor.execute(f"DROP ROLE IF EXISTS {ROLE}")


def _wait_for_role_on_replica() -> None:
    # The primary commits asynchronously (synchronous_commit=off): replay takes a moment.
    deadline = time.monotonic() + 15
    while True:
        with connections["replica"].cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [ROLE])
            if cursor.fetchone() or time.monotonic() > deadline:
                return
        time.sleep(0.05)


@contextlib.contextmanager
def tiny_alias(bouncer: Bouncer, **settings: Any) -> Iterator[None]:
    """A declared alias for the generated PgBouncer, with ``default`` as its direct alias."""
    params = {
        **copy.deepcopy(connections["default"].settings_dict),
        "HOST": "127.0.0.1",
        "PORT": str(bouncer.port),
        "USER": ROLE,
        "PASSWORD": PASSWORD,
        "DISABLE_SERVER_SIDE_CURSORS": True,
    }
    params.pop("TEST", None)
    declared = {"tiny": {"pool_mode": "transaction", "direct": "default"}}
    with temporary_alias("tiny", **params), override_settings(SCALEOPS_PGBOUNCER_ALIASES=declared, **settings):
        yield


def test_generated_files_start_pgbouncer_for_primary_and_replica(bouncer):
    ini = (bouncer.folder / "pgbouncer.ini").read_text()
    userlist = bouncer.folder / "userlist.txt"
    assert "pool_mode = transaction" in ini and "default_pool_size = 2" in ini
    assert "auth_type = scram-sha-256" in ini and f"stats_users = {ROLE}" in ini
    assert f"{bouncer.test_db}_app_replica = host=127.0.0.1" in ini  # the replica's own entry
    assert stat.S_IMODE(userlist.stat().st_mode) == 0o600
    assert userlist.read_text().startswith(f'"{ROLE}" "SCRAM-SHA-256$4096:')
    for text in (bouncer.output, ini):
        assert PASSWORD not in text and "SCRAM-SHA-256$" not in text
    assert "default_pool_size=2 (limited by cores)" in bouncer.output

    with psycopg.connect(bouncer.url(), prepare_threshold=None) as conn:
        assert conn.execute("SELECT current_user, pg_is_in_recovery()").fetchone() == (ROLE, False)
    with psycopg.connect(bouncer.url(f"{bouncer.test_db}_app_replica"), prepare_threshold=None) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        psycopg.connect(bouncer.url(password="wrong"), connect_timeout=5)


@pytest.mark.django_db(databases=["default"])
def test_md5_config_starts_pgbouncer_too(bouncer):
    folder = Path(tempfile.mkdtemp(prefix="scaleops-pgb-md5-"))
    os.chmod(folder, 0o755)
    (port,) = free_ports(1)
    params = {**copy.deepcopy(connections["default"].settings_dict), "USER": ROLE, "PASSWORD": PASSWORD}
    params.pop("TEST", None)
    try:
        with temporary_alias("app_md5", **params):
            output = generate(folder, port, "app_md5", extra_args=("--auth-type=md5",))
        assert PASSWORD not in output
        assert (folder / "userlist.txt").read_text().startswith(f'"{ROLE}" "md5')
        with running_pgbouncer(folder / "pgbouncer.ini", port):
            url = f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{port}/{bouncer.test_db}"
            with psycopg.connect(url, prepare_threshold=None) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            with pytest.raises(psycopg.OperationalError, match="authentication failed"):
                psycopg.connect(url.replace(PASSWORD, "nope"), connect_timeout=5)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.django_db(databases=["default"])
def test_secrets_from_copies_the_roles_stored_verifier(bouncer):
    params = {**copy.deepcopy(connections["default"].settings_dict), "USER": ROLE, "PASSWORD": ""}
    params.pop("TEST", None)
    folder = Path(tempfile.mkdtemp(prefix="scaleops-pgb-copy-"))
    try:
        with temporary_alias("app_nopass", **params):
            # Without a PASSWORD there is nothing to compute a verifier from: a clear error.
            with pytest.raises(CommandError, match="has no PASSWORD"):
                call_command("pgbouncer_config", "--database=app_nopass", "--dry-run", "--max-connections=100")
            # The superuser behind "default" reads the stored verifier, so PgBouncer can pass SCRAM through.
            out = StringIO()
            call_command(
                "pgbouncer_config", "--database=app_nopass", f"--output-dir={folder}", "--max-connections=100",
                "--secrets-from=default", stdout=out,
            )  # fmt: skip
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [ROLE])
            (stored,) = cursor.fetchone()
        assert stored.startswith("SCRAM-SHA-256$")
        assert (folder / "userlist.txt").read_text() == f'"{ROLE}" "{stored}"\n'
        assert stored not in out.getvalue() and "userlist.txt: 1 users" in out.getvalue()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _hold_transactions(url: str, rounds: int, seconds: float, errors: list[BaseException]) -> None:
    try:
        with psycopg.connect(url, prepare_threshold=None) as conn:
            for _ in range(rounds):
                with conn.transaction():
                    conn.execute("SELECT pg_sleep(%s)", [seconds])
    except BaseException as exc:  # reported by the test
        errors.append(exc)


@pytest.mark.django_db(databases=["default"])
def test_tiny_pool_under_load_has_waiting_clients_and_turns_degraded(bouncer):
    errors: list[BaseException] = []
    workers = [threading.Thread(target=_hold_transactions, args=(bouncer.url(), 3, 0.4, errors)) for _ in range(8)]
    with tiny_alias(bouncer, SCALEOPS_PGBOUNCER_MAX_WAIT_CRITICAL_MS=60_000):
        for worker in workers:
            worker.start()
        try:
            deadline = time.monotonic() + 10
            waiting = 0
            while time.monotonic() < deadline and not waiting:
                waiting = get_pool_metrics("tiny").cl_waiting
                time.sleep(0.05)
            assert waiting > 0, "no client ever waited for the 2 server connections"
            health = validate_pool_health("tiny")
            out = StringIO()
            call_command("pgbouncer_status", "--database=tiny", "--json", stdout=out)
            with pytest.raises(CommandError) as excinfo:
                call_command("pgbouncer_status", "--database=tiny", "--fail-on-degraded", stdout=StringIO())
        finally:
            for worker in workers:
                worker.join()
    assert not errors, errors
    assert health.status == "degraded", health.findings
    assert any("wait for a server connection" in finding.problem for finding in health.findings)
    assert any("default_pool_size" in text for text in health.recommendations)
    pool = next(p for p in health.metrics.pools if p.database == bouncer.test_db)  # type: ignore[union-attr]
    assert pool.pool_size == 2 and pool.sv_active <= 2
    report = json.loads(out.getvalue())["aliases"][0]
    assert report["status"] == "degraded" and report["metrics"]["pools"]
    assert excinfo.value.returncode == 1


@pytest.mark.django_db(databases=["default"])
def test_client_idle_in_transaction_is_reported_as_a_leak(bouncer):
    with tiny_alias(bouncer, SCALEOPS_PGBOUNCER_LEAK_SECONDS=1):
        assert validate_pool_health("tiny").leaks == ()
        with psycopg.connect(bouncer.url(), prepare_threshold=None, application_name="leaky-worker") as conn:
            conn.execute("SELECT 1")  # opens the transaction, then the client does nothing
            deadline = time.monotonic() + 6
            leaks: tuple[Any, ...] = ()
            while time.monotonic() < deadline and not leaks:
                time.sleep(0.3)
                health = validate_pool_health("tiny")
                leaks = health.leaks
            out = StringIO()
            call_command("pgbouncer_status", "--database=tiny", stdout=out)
            backend_pid = conn.execute("SELECT pg_backend_pid()").fetchone()
            conn.rollback()
        assert len(leaks) == 1, "the open transaction was not found"
        leak = leaks[0]
        assert leak.kind == "idle_in_transaction" and leak.held_seconds >= 1
        assert leak.application_name == "leaky-worker" and (leak.server_pid,) == backend_pid
        assert health.status == "degraded"
        assert "leak (idle_in_transaction)" in out.getvalue()
        # Without the direct alias the state is unknown, and the leak is still found.
        assert find_connection_leaks(health.metrics, min_seconds=1)[0].kind == "long_held"  # type: ignore[arg-type]
        assert validate_pool_health("tiny").leaks == ()


def _disconnect_inside_transactions(url: str, seconds: float, errors: list[BaseException]) -> None:
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            conn = psycopg.connect(url, prepare_threshold=None)
            conn.execute("SELECT 1")  # BEGIN; SELECT 1; and then the client goes away
            conn.close()
    except BaseException as exc:
        errors.append(exc)


@pytest.mark.django_db(databases=["default"])
def test_clients_leaving_inside_transactions_show_up_as_server_churn(bouncer):
    errors: list[BaseException] = []
    with tiny_alias(bouncer, SCALEOPS_PGBOUNCER_CHURN_PER_MINUTE=30):
        # Steady traffic on one client reuses its server connections: no churn.
        steady = threading.Thread(target=_hold_transactions, args=(bouncer.url(), 20, 0.05, errors))
        steady.start()
        calm = validate_pool_health("tiny", sample_seconds=1.0)
        steady.join()
        churner = threading.Thread(target=_disconnect_inside_transactions, args=(bouncer.url(), 2.0, errors))
        churner.start()
        churning = validate_pool_health("tiny", sample_seconds=1.0)
        churner.join()
    assert not errors, errors
    assert calm.server_sessions_per_minute is not None and calm.server_sessions_per_minute < 30
    assert not any("server sessions per minute" in f.problem for f in calm.findings)
    assert churning.server_sessions_per_minute is not None and churning.server_sessions_per_minute >= 30
    assert any("disconnect inside a transaction" in text for text in churning.recommendations)
    assert churning.status == "degraded"
