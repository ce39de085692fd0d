"""Pool health and connection-leak detection on top of :func:`get_pool_metrics`."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from django.db import DatabaseError, connections

from django_scaleops.conf import conf
from django_scaleops.pgbouncer.aliases import PgBouncerError, PooledAlias, default_pooled_alias, pooled_alias
from django_scaleops.pgbouncer.metrics import PoolMetrics, get_pool_metrics

OK, DEGRADED, UNHEALTHY = "ok", "degraded", "unhealthy"
WARNING, CRITICAL = "warning", "critical"
# A remembered session count older than this says nothing about the current churn.
CHURN_MEMORY_SECONDS = 600


@dataclass(frozen=True)
class Finding:
    """One thing health noticed, with what to do about it."""

    level: str  # "warning" makes the status degraded, "critical" unhealthy
    pool: str
    problem: str
    recommendation: str


@dataclass(frozen=True)
class ConnectionLeak:
    """A client holding a server connection long after its last query.

    ``kind`` is ``"idle_in_transaction"`` when PostgreSQL says so (read through the alias'
    ``direct`` alias), otherwise ``"long_held"``: a transaction left open or a very long query.
    """

    kind: str
    database: str
    user: str
    client_addr: str
    client_port: int
    application_name: str
    held_seconds: float
    server_pid: int


@dataclass(frozen=True)
class PoolHealth:
    """What :func:`validate_pool_health` concluded for one alias."""

    alias: str
    status: str
    findings: tuple[Finding, ...] = ()
    leaks: tuple[ConnectionLeak, ...] = ()
    server_sessions_per_minute: float | None = None
    metrics: PoolMetrics | None = field(default=None, repr=False)
    error: str | None = None

    @property
    def recommendations(self) -> list[str]:
        return [finding.recommendation for finding in self.findings]

    def as_dict(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "status": self.status,
            "error": self.error,
            "findings": [asdict(finding) for finding in self.findings],
            "leaks": [asdict(leak) for leak in self.leaks],
            "server_sessions_per_minute": self.server_sessions_per_minute,
            "metrics": self.metrics.summary() if self.metrics else None,
        }


def validate_pool_health(alias: str | None = None, *, sample_seconds: float = 0.0) -> PoolHealth:
    """Judge the PgBouncer behind ``alias``: ``ok``, ``degraded`` or ``unhealthy``.

    Looks at waiting clients, the longest wait, pool utilisation, server churn (new server
    sessions per minute, read from ``pg_stat_database`` through the alias' ``direct`` alias) and
    connection leaks. Churn is measured over ``sample_seconds`` when given, otherwise since the
    previous call in this process; without a ``direct`` alias it is not measured.

    Never raises for an unreachable PgBouncer: that is an ``unhealthy`` result with ``error``.
    """
    entry = pooled_alias(alias) if alias else default_pooled_alias()
    try:
        churn = _server_sessions_per_minute(entry, sample_seconds)
        metrics = get_pool_metrics(entry.alias)
    except PgBouncerError as exc:
        finding = Finding(
            CRITICAL, "*", str(exc), "Start PgBouncer or fix admin_url; clients of this alias cannot connect."
        )
        return PoolHealth(entry.alias, UNHEALTHY, (finding,), error=str(exc))
    findings = [*_pool_findings(metrics), *_churn_findings(churn)]
    leaks = find_connection_leaks(metrics, direct=entry.direct)
    if leaks:
        worst = max(leak.held_seconds for leak in leaks)
        findings.append(
            Finding(
                WARNING,
                ",".join(sorted({leak.database for leak in leaks})),
                f"{len(leaks)} clients hold a server connection without working (longest {worst:.0f}s).",
                "Close transactions promptly (no network calls inside atomic()); set PgBouncer's "
                "idle_transaction_timeout and PostgreSQL's idle_in_transaction_session_timeout.",
            )
        )
    status = OK
    if any(finding.level == WARNING for finding in findings):
        status = DEGRADED
    if any(finding.level == CRITICAL for finding in findings):
        status = UNHEALTHY
    return PoolHealth(entry.alias, status, tuple(findings), tuple(leaks), churn, metrics)


def _pool_findings(metrics: PoolMetrics) -> list[Finding]:
    findings: list[Finding] = []
    warn_ms = conf.SCALEOPS_PGBOUNCER_MAX_WAIT_MS
    critical_ms = conf.SCALEOPS_PGBOUNCER_MAX_WAIT_CRITICAL_MS
    busy_share = float(conf.SCALEOPS_PGBOUNCER_UTILISATION_WARN)
    for pool in metrics.pools:
        name = f"{pool.database}/{pool.user}"
        grow = (
            f"Raise default_pool_size of {pool.database} (now {pool.pool_size}) within the server's budget"
            " (calculate_pool_size), or shorten transactions and slow queries."
        )
        if pool.cl_waiting:
            findings.append(Finding(WARNING, name, f"{pool.cl_waiting} clients wait for a server connection.", grow))
        if pool.maxwait_ms >= critical_ms:
            findings.append(
                Finding(CRITICAL, name, f"The oldest waiting client has waited {pool.maxwait_ms:.0f} ms.", grow)
            )
        elif pool.maxwait_ms >= warn_ms:
            findings.append(
                Finding(WARNING, name, f"The oldest waiting client has waited {pool.maxwait_ms:.0f} ms.", grow)
            )
        if pool.pool_size and pool.utilisation >= busy_share:
            findings.append(
                Finding(
                    WARNING,
                    name,
                    f"{pool.sv_active} of {pool.pool_size} server connections busy ({pool.utilisation:.0%}).",
                    grow,
                )
            )
    return findings


def _churn_findings(per_minute: float | None) -> list[Finding]:
    limit = float(conf.SCALEOPS_PGBOUNCER_CHURN_PER_MINUTE)
    if per_minute is None or per_minute < limit:
        return []
    return [
        Finding(
            WARNING,
            "*",
            f"{per_minute:.0f} new server sessions per minute (limit {limit:.0f}).",
            "Server connections are being replaced: look for clients that disconnect inside a transaction"
            " (PgBouncer then discards the server connection), a short server_lifetime or"
            " server_idle_timeout, or clients connecting around PgBouncer.",
        )
    ]


# ---- server churn, from pg_stat_database.sessions on the direct alias

_sessions_lock = threading.Lock()
_last_sessions: dict[str, tuple[float, int]] = {}


def _read_sessions(direct: str) -> int:
    with connections[direct].cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def _server_sessions_per_minute(entry: PooledAlias, sample_seconds: float) -> float | None:
    if not entry.direct:
        return None
    try:
        first: tuple[float, int] | None
        if sample_seconds > 0:
            first = (time.monotonic(), _read_sessions(entry.direct))
            time.sleep(sample_seconds)
        else:
            with _sessions_lock:
                first = _last_sessions.get(entry.alias)
        current = (time.monotonic(), _read_sessions(entry.direct))
    except DatabaseError:
        return None  # the direct alias is down: churn unknown, PgBouncer's own figures still count
    with _sessions_lock:
        _last_sessions[entry.alias] = current
    if first is None or not 0 < current[0] - first[0] < CHURN_MEMORY_SECONDS:
        return None
    # Our own reading through the direct alias may open one session: do not count it.
    opened = max(0, current[1] - first[1] - 1)
    return opened * 60 / (current[0] - first[0])


# ---- leaks


def find_connection_leaks(
    metrics: PoolMetrics, *, min_seconds: float | None = None, direct: str | None = None
) -> list[ConnectionLeak]:
    """Clients of transaction-mode pools that hold a server connection ``min_seconds`` after
    their last query.

    In transaction mode a client holds a server only inside a transaction, so a long hold is a
    transaction left open (``idle in transaction``) or a very long query. With ``direct`` (an
    alias straight to PostgreSQL) each suspect is looked up in ``pg_stat_activity`` to tell the two
    apart.
    """
    threshold = float(conf.SCALEOPS_PGBOUNCER_LEAK_SECONDS if min_seconds is None else min_seconds)
    session_pools = {(pool.database, pool.user) for pool in metrics.pools if pool.pool_mode == "session"}
    servers = {server.ptr: server for server in metrics.servers}
    suspects: list[tuple[Any, float, int]] = []
    for client in metrics.clients:
        if not client.linked or (client.database, client.user) in session_pools or client.request_time is None:
            continue
        held = (metrics.taken_at - client.request_time).total_seconds()
        if held >= threshold:
            server = servers.get(client.link)
            suspects.append((client, held, server.remote_pid if server else 0))
    states = _backend_states(direct, [pid for _, _, pid in suspects if pid]) if direct and suspects else {}
    leaks = []
    for client, held, pid in suspects:
        state, idle_for = states.get(pid, ("", None))
        idle = state.startswith("idle in transaction")
        leaks.append(
            ConnectionLeak(
                kind="idle_in_transaction" if idle else "long_held",
                database=client.database,
                user=client.user,
                client_addr=client.addr,
                client_port=client.port,
                application_name=client.application_name,
                held_seconds=round(max(held, idle_for or 0.0), 1),
                server_pid=pid,
            )
        )
    return leaks


def _backend_states(direct: str, pids: list[int]) -> dict[int, tuple[str, float | None]]:
    try:
        with connections[direct].cursor() as cursor:
            cursor.execute(
                "SELECT pid, state, EXTRACT(EPOCH FROM now() - state_change)::float8"
                " FROM pg_stat_activity WHERE pid = ANY(%s)",
                [pids],
            )
            return {int(pid): (str(state or ""), age) for pid, state, age in cursor.fetchall()}
    except DatabaseError:
        return {}
