"""Replica health: what one check measures, how it is classified, and the background monitor.

Checks use their own short-lived-timeout psycopg connections, not Django's, so a dead replica
costs the monitor at most ``SCALEOPS_ROUTER_CHECK_TIMEOUT`` and never a request.

Every connection, the monitor's and Django's, is matched to the server it reached
(``ServerIdentity``): a replay position or health record learnt from one server is never applied
to another that later answers on the same address (a re-cloned standby, a VIP in front of several).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import psycopg
from psycopg.pq import TransactionStatus

from django_scaleops.replicas.lsn import parse_lsn

logger = logging.getLogger("django_scaleops.router")

HEALTHY = "healthy"
LAGGING = "lagging"
DOWN = "down"
RECOVERING = "recovering"

REPLICA_CHECK_SQL = """
SELECT pg_is_in_recovery(),
       pg_last_wal_replay_lsn()::text,
       pg_last_wal_receive_lsn()::text,
       EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8
"""

# Which server a connection reached. A standby re-cloned from the same primary keeps the system
# identifier and timeline (pg_basebackup copies pg_control): only its start time differs.
IDENTITY_SQL = (
    "SELECT s.system_identifier, c.timeline_id, pg_postmaster_start_time()::text"
    " FROM pg_control_system() s, pg_control_checkpoint() c"
)
PROBE_SQL = (
    "SELECT pg_last_wal_replay_lsn()::text, s.system_identifier, c.timeline_id, pg_postmaster_start_time()::text"
    " FROM pg_control_system() s, pg_control_checkpoint() c"
)
# Where pg_control_*() are not granted: start time alone still tells a restarted or other server.
_IDENTITY_FALLBACK_SQL = "SELECT NULL::bigint, NULL::integer, pg_postmaster_start_time()::text"
_PROBE_FALLBACK_SQL = (
    "SELECT pg_last_wal_replay_lsn()::text, NULL::bigint, NULL::integer, pg_postmaster_start_time()::text"
)
_control_functions_granted = True


class ServerIdentity(NamedTuple):
    system_identifier: int | None
    timeline: int | None
    started: str

    def describe(self) -> str:
        return f"system {self.system_identifier}, timeline {self.timeline}, started {self.started}"


def fetch_identified(conn: psycopg.Connection[Any], sql: str) -> tuple[tuple[Any, ...], ServerIdentity]:
    """Run ``IDENTITY_SQL`` or ``PROBE_SQL`` on ``conn``: the leading columns and the server's identity."""
    global _control_functions_granted
    if not _control_functions_granted:
        sql = _PROBE_FALLBACK_SQL if sql == PROBE_SQL else _IDENTITY_FALLBACK_SQL
    try:
        row = conn.execute(sql).fetchone()
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedFunction, psycopg.NotSupportedError):
        # Only outside a transaction: a failed statement inside one would have aborted it.
        if not _control_functions_granted or conn.info.transaction_status != TransactionStatus.IDLE:
            raise
        _control_functions_granted = False
        logger.warning("pg_control_system()/pg_control_checkpoint() refused: replica servers told apart by start time")
        return fetch_identified(conn, sql)
    assert row is not None
    values = tuple(row)
    return values[:-3], ServerIdentity(*values[-3:])


@dataclass
class ReplicaHealth:
    alias: str
    # A replica serves reads only when healthy. It starts healthy: failover covers a wrong guess
    # until the first check, which runs as soon as the monitor starts.
    state: str = HEALTHY
    # Test-mirror mode: the alias points at the primary's own database (Django's TEST MIRROR).
    mirror: bool = False
    # The newest known replay position and the server it was read from, replaced as one value so
    # that no reader ever pairs one server's position with another server.
    position: tuple[ServerIdentity | None, int] = (None, 0)
    # The server the monitor's checks (good_checks, state, lag) describe.
    checked: ServerIdentity | None = None
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    good_checks: int = 0
    last_check: float | None = None
    last_error: str = ""
    reads: int = 0
    failovers: int = 0
    # Reads cancelled by a recovery conflict and answered by the primary (the replica stays in).
    conflicts: int = 0
    probed_at: float = 0.0
    # When this process last took it out after a failed read or connect (time.time()): a shared
    # snapshot older than that does not put it back.
    down_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def replay_lsn(self) -> int:
        return self.position[1]


@dataclass
class CheckResult:
    ok: bool
    replay_lsn: int = 0
    lag_seconds: float = 0.0
    lag_bytes: int = 0
    error: str = ""
    identity: ServerIdentity | None = None


class CheckConnection:
    """One persistent monitoring connection, reopened after any failure."""

    def __init__(self, params: dict[str, Any], timeout: float) -> None:
        self.params = _with_timeouts(params, timeout)
        self.conn: psycopg.Connection[Any] | None = None
        # The server this connection reached: read once per connection, which never changes server.
        self.identity: ServerIdentity | None = None

    def fetchone(self, sql: str) -> tuple[Any, ...]:
        reused = self.conn is not None and not self.conn.closed
        try:
            return self._fetchone(sql)
        except psycopg.OperationalError:
            self.close()
            if not reused:
                raise
        # A connection kept from before a restart fails once; only a fresh one's failure counts.
        try:
            return self._fetchone(sql)
        except psycopg.Error:
            self.close()
            raise

    def _fetchone(self, sql: str) -> tuple[Any, ...]:
        if self.conn is None or self.conn.closed:
            self.identity = None
            self.conn = psycopg.connect(**self.params, autocommit=True)
            self.identity = fetch_identified(self.conn, IDENTITY_SQL)[1]
        row = self.conn.execute(sql).fetchone()
        assert row is not None
        return tuple(row)

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None
            self.identity = None


def _with_timeouts(params: dict[str, Any], timeout: float) -> dict[str, Any]:
    params = {k: v for k, v in params.items() if k not in ("cursor_factory", "context")}
    # libpq's connect_timeout is whole seconds (and at least 2 in practice).
    params["connect_timeout"] = max(2, round(timeout))
    options = f"-c statement_timeout={int(timeout * 1000)}"
    params["options"] = f"{params['options']} {options}" if params.get("options") else options
    return params


def check_replica(
    conn: CheckConnection, primary_lsn: int | None, *, mirror: bool, primary: ServerIdentity | None = None
) -> CheckResult:
    """Measure one replica. Lag in bytes is against the primary's position when it is known."""
    try:
        in_recovery, replay, receive, replay_age = conn.fetchone(REPLICA_CHECK_SQL)
    except psycopg.Error as exc:
        return CheckResult(ok=False, error=_describe(exc))
    identity = conn.identity
    if mirror:
        return CheckResult(ok=True, identity=identity)
    if not in_recovery or replay is None:
        return CheckResult(ok=False, error="not in recovery: this server is not a standby (promoted?)")
    ours = primary.system_identifier if primary else None
    theirs = identity.system_identifier if identity else None
    if ours is not None and theirs is not None and ours != theirs:
        # A standby of another cluster: its WAL positions mean nothing against our primary's.
        return CheckResult(
            ok=False,
            error=f"not a standby of the primary: system identifier {theirs}, the primary's is {ours}",
            identity=identity,
        )
    replay_lsn = parse_lsn(replay)
    if primary_lsn is not None:
        lag_bytes = max(0, primary_lsn - replay_lsn)
    else:
        lag_bytes = max(0, parse_lsn(receive) - replay_lsn) if receive else 0
    # An idle primary writes nothing, so "time since the last replayed commit" grows without any
    # lag: only count time while there is WAL left to replay.
    lag_seconds = float(replay_age or 0.0) if lag_bytes else 0.0
    return CheckResult(
        ok=True, replay_lsn=replay_lsn, lag_seconds=max(0.0, lag_seconds), lag_bytes=lag_bytes, identity=identity
    )


def _describe(exc: BaseException) -> str:
    # The first line only: libpq messages can carry the host and user, never a password.
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


class HealthMonitor(threading.Thread):
    """Calls ``check_all`` at once, then every interval with +/-20% jitter, until stopped."""

    def __init__(self, check_all: Callable[[], None], interval: Callable[[], float]) -> None:
        super().__init__(name="scaleops-replica-monitor", daemon=True)
        self._check_all = check_all
        self._interval = interval
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._check_all()
            except Exception:  # the monitor must outlive any one bad round
                logger.exception("replica health check round failed")
            # Jitter keeps many processes from checking (and reconnecting) in lockstep.
            self._stopped.wait(self._interval() * random.uniform(0.8, 1.2))

    def stop(self) -> None:
        self._stopped.set()
