"""Live pool figures from PgBouncer's admin console: ``get_pool_metrics()``."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from django_scaleops.conf import conf
from django_scaleops.pgbouncer.aliases import (
    ADMIN_DATABASE,
    PgBouncerError,
    default_pooled_alias,
    pooled_alias,
    pooled_aliases,
)
from django_scaleops.pgbouncer.console import AdminConsole, Row, admin_console


@dataclass(frozen=True)
class PoolFigures:
    """One PgBouncer pool (a database + user pair) at one moment."""

    database: str
    user: str
    pool_mode: str
    pool_size: int
    cl_active: int
    cl_waiting: int
    sv_active: int
    sv_idle: int
    sv_used: int
    sv_login: int
    maxwait_ms: float

    @property
    def utilisation(self) -> float:
        """Share of the pool's server connections busy with a client."""
        return self.sv_active / self.pool_size if self.pool_size else 0.0


@dataclass(frozen=True)
class Connection:
    """A client or server connection from ``SHOW CLIENTS`` / ``SHOW SERVERS``."""

    kind: str  # "client" or "server"
    database: str
    user: str
    state: str
    addr: str
    port: int
    connect_time: datetime | None
    request_time: datetime | None
    linked: bool  # a client holding a server connection, or a server assigned to a client
    remote_pid: int
    application_name: str
    ptr: str
    link: str


@dataclass(frozen=True)
class PoolMetrics:
    """Everything read from one admin console at ``taken_at``."""

    alias: str
    version: tuple[int, int, int]
    taken_at: datetime
    pools: tuple[PoolFigures, ...]
    stats: dict[str, dict[str, float]]
    clients: tuple[Connection, ...] = field(repr=False)
    servers: tuple[Connection, ...] = field(repr=False)
    config: dict[str, str] = field(repr=False)

    @property
    def cl_waiting(self) -> int:
        return sum(pool.cl_waiting for pool in self.pools)

    @property
    def maxwait_ms(self) -> float:
        return max((pool.maxwait_ms for pool in self.pools), default=0.0)

    def summary(self) -> dict[str, Any]:
        """The JSON-friendly figures published by the metrics endpoint and ``pgbouncer_status``."""
        return {
            "version": ".".join(map(str, self.version)),
            "taken_at": self.taken_at.isoformat(),
            "cl_waiting": self.cl_waiting,
            "maxwait_ms": round(self.maxwait_ms, 3),
            "pools": [
                {**asdict(pool), "utilisation": round(pool.utilisation, 3), "maxwait_ms": round(pool.maxwait_ms, 3)}
                for pool in self.pools
            ],
            "stats": self.stats,
        }


def get_pool_metrics(alias: str | None = None) -> PoolMetrics:
    """Read the pools, stats, clients and servers of the PgBouncer behind ``alias``.

    Args:
        alias: a database alias declared in ``SCALEOPS_PGBOUNCER_ALIASES``; default: the only
            (or first) one declared.

    Raises:
        PgBouncerError: the alias is not declared, or the admin console cannot be read.
    """
    entry = pooled_alias(alias) if alias else default_pooled_alias()
    with admin_console(entry.resolved_admin_url()) as console:
        return read_metrics(console, entry.alias)


def read_metrics(console: AdminConsole, alias: str) -> PoolMetrics:
    """Build a :class:`PoolMetrics` from an open admin console."""
    version = console.version()
    config = console.config()
    default_pool_size = _int(config.get("default_pool_size"))
    sizes = {str(row.get("name")): _int(row.get("pool_size"), default_pool_size) for row in console.show("DATABASES")}
    pools = tuple(
        _pool(row, sizes.get(str(row.get("database")), default_pool_size), config.get("pool_mode", ""))
        for row in console.show("POOLS")
        if row.get("database") != ADMIN_DATABASE
    )
    stats = {
        str(row["database"]): {key: float(value) for key, value in row.items() if isinstance(value, int | float)}
        for row in console.show("STATS")
        if row.get("database") != ADMIN_DATABASE
    }
    clients = tuple(
        _connection(row, "client") for row in console.show("CLIENTS") if row.get("database") != ADMIN_DATABASE
    )
    servers = tuple(_connection(row, "server") for row in console.show("SERVERS"))
    return PoolMetrics(alias, version, datetime.now(UTC), pools, stats, clients, servers, config)


def _pool(row: Row, pool_size: int, default_mode: str) -> PoolFigures:
    # maxwait_us appeared in 1.8; before it only whole seconds were reported.
    maxwait_ms = _int(row.get("maxwait")) * 1000 + _int(row.get("maxwait_us")) / 1000
    return PoolFigures(
        database=str(row.get("database", "")),
        user=str(row.get("user", "")),
        pool_mode=str(row.get("pool_mode") or default_mode),
        pool_size=pool_size,
        cl_active=_int(row.get("cl_active")),
        cl_waiting=_int(row.get("cl_waiting")),
        sv_active=_int(row.get("sv_active")),
        sv_idle=_int(row.get("sv_idle")),
        sv_used=_int(row.get("sv_used")),
        sv_login=_int(row.get("sv_login")),
        maxwait_ms=maxwait_ms,
    )


def _connection(row: Row, kind: str) -> Connection:
    return Connection(
        kind=kind,
        database=str(row.get("database", "")),
        user=str(row.get("user", "")),
        state=str(row.get("state", "")),
        addr=str(row.get("addr") or ""),
        port=_int(row.get("port")),
        connect_time=parse_console_time(row.get("connect_time")),
        request_time=parse_console_time(row.get("request_time")),
        linked=bool(row.get("link")),
        remote_pid=_int(row.get("remote_pid")),
        application_name=str(row.get("application_name") or ""),
        ptr=str(row.get("ptr") or ""),
        link=str(row.get("link") or ""),
    )


def parse_console_time(value: Any) -> datetime | None:
    """The console prints times as ``2026-01-31 12:00:00 UTC`` (PgBouncer's local zone name)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not value:
        return None
    text = str(value).strip()
    stamp, _, zone = text.rpartition(" ")
    if not stamp:
        stamp, zone = text, ""
    try:
        parsed = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    if zone.upper() in ("UTC", "GMT", ""):
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone()  # another zone name: PgBouncer runs in this machine's local time


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


# ---- the figures published by the monitoring endpoints

_cache_lock = threading.Lock()
_cache: dict[str, tuple[float, dict[str, Any]]] = {}


def metrics_source() -> dict[str, Any]:
    """Figures for ``django_scaleops.metrics``: per declared alias, cached for a few seconds.

    An unreachable PgBouncer is reported (and cached too), so a scrape during an outage does
    not wait for the connect timeout on every call.
    """
    ttl = float(conf.SCALEOPS_PGBOUNCER_METRICS_TTL)
    figures: dict[str, Any] = {}
    now = time.monotonic()
    for entry in pooled_aliases():
        with _cache_lock:
            cached = _cache.get(entry.alias)
        if cached and now - cached[0] < ttl:
            figures[entry.alias] = cached[1]
            continue
        try:
            value: dict[str, Any] = {"reachable": True, **get_pool_metrics(entry.alias).summary()}
        except PgBouncerError:
            value = {"reachable": False}
        with _cache_lock:
            _cache[entry.alias] = (now, value)
        figures[entry.alias] = value
    return figures


def clear_metrics_cache() -> None:
    with _cache_lock:
        _cache.clear()
