"""The replica pool: which replica a read goes to, read-your-writes by WAL position, health
transitions, and the figures behind ``replica_status()``.

One pool per process, built lazily from settings on first use and rebuilt when they change.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import psycopg
from django.conf import settings
from django.db import DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from django_scaleops import signals
from django_scaleops.conf import conf
from django_scaleops.replicas import failover
from django_scaleops.replicas.health import (
    DOWN,
    HEALTHY,
    LAGGING,
    PROBE_SQL,
    RECOVERING,
    CheckConnection,
    CheckResult,
    HealthMonitor,
    ReplicaHealth,
    ServerIdentity,
    check_replica,
    fetch_identified,
)
from django_scaleops.replicas.lsn import format_lsn, parse_lsn
from django_scaleops.replicas.shared import SharedHealth
from django_scaleops.replicas.state import ReadRoute, RoutingState, current_state, primary_forced

logger = logging.getLogger("django_scaleops.router")

# A replica found behind a client's write position is not asked again for this long: while it
# catches up, reads go to the primary without a probe each.
PROBE_INTERVAL = 0.01

# Per Django connection: (the psycopg connection, the server it reached), once probed.
_SERVER_ATTR = "_scaleops_server"
_UNSEEN: tuple[None, None] = (None, None)

# The primary's write position and the timeline it is on: a WAL file name starts with the timeline
# in hex. pg_control_checkpoint() would lag behind a promotion until the next checkpoint.
POSITION_SQL = "SELECT pg_current_wal_insert_lsn()::text, pg_walfile_name(pg_current_wal_insert_lsn())"


class ReplicaPool:
    def __init__(self, primary: str, replicas: list[str]) -> None:
        self.primary = primary
        self.replicas = replicas
        self.aliases = frozenset([primary, *replicas])
        primary_settings = connections[primary].settings_dict
        self.health: dict[str, ReplicaHealth] = {
            alias: ReplicaHealth(alias, mirror=_is_mirror(connections[alias].settings_dict, primary_settings))
            for alias in replicas
        }
        # Connection parameters are taken here, in the thread that builds the pool: the monitor
        # thread's own ``connections`` would not see per-thread changes (test databases).
        self._check_params = {alias: dict(connections[alias].get_connection_params()) for alias in replicas}
        self._primary_params = dict(connections[primary].get_connection_params())
        self._check_conns: dict[str, CheckConnection] = {}
        # Smooth weighted round robin (nginx's): each pick adds every usable replica's weight to
        # its credit and takes the one with the most, which then pays the total. Only usable
        # replicas take part, so a down one's share spreads over the others in proportion.
        self.weights = _weights(replicas)
        self._credit = dict.fromkeys(replicas, 0)
        self._lock = threading.Lock()
        self._monitor: HealthMonitor | None = None
        self.all_down = False
        self.primary_reads = 0
        self.fallback_reads = 0
        self.shared = _shared_health(primary, replicas)
        self.checks_run = 0  # rounds of checks this process ran itself (not read from the leader)
        # The primary's timeline as last seen (a write position or a check); it changes when a
        # standby is promoted. And the server the health check's primary connection reached.
        self.primary_timeline: int | None = None
        self.primary_server: dict[str, Any] | None = None

    # ---- routing -----------------------------------------------------------------------

    def db_for_read(self) -> str:
        # The router's fast path answers most reads from the route this sets (state.route); this
        # is the first read of a context, and any read after something changed.
        primary = connections[self.primary]
        if failover.track_writes not in primary.execute_wrappers:
            failover.ensure_installed(primary, failover.track_writes)
        if primary_forced() or primary.in_atomic_block or primary.needs_rollback:
            return self.primary
        state = current_state()
        if state.wrote:
            self.resolve_write_position(state)
        if state.pin_until:
            if time.time() < state.pin_until:
                return self._to_primary()
            state.pin_until = 0.0  # expired (everything compares it with now): the fast path may run
        if state.timeline is not None and state.timeline != self.primary_timeline and self._old_timeline(state):
            return self._to_primary()
        if not self.replicas:
            return self.primary
        if self._monitor is None:
            self.ensure_monitor()
        # The request's replica, while it stays healthy and has what the client wrote.
        sticky = state.replica
        floor = state.min_lsn
        if sticky is not None:
            health = self.health[sticky]
            if (
                health.state == HEALTHY
                and (connection := self._ready(sticky)) is not None
                and self._caught_up(health, state.min_lsn, connection)
            ):
                health.reads += 1
                state.route = ReadRoute(self, threading.get_ident(), sticky, primary, connection, health)
                return sticky
            # Moving on: the next replica must be as far as this one was, so reads never go back.
            floor = max(floor, health.replay_lsn)
        chosen = self.pick_replica(state, floor=floor)
        if chosen is None:
            return self._to_primary()
        state.route = ReadRoute(self, threading.get_ident(), chosen, primary, connections[chosen], self.health[chosen])
        return chosen

    def db_for_write(self) -> str:
        failover.ensure_installed(connections[self.primary], failover.track_writes)
        return self.primary

    def pick_replica(self, state: RoutingState, exclude: str | None = None, floor: int = 0) -> str | None:
        usable = [alias for alias in self.replicas if alias != exclude and self.health[alias].state == HEALTHY]
        if exclude is None:
            self._note_availability(bool(usable))
        if not usable:
            return None
        needed = max(state.min_lsn, floor)
        for alias in self._weighted_order(usable):
            connection = self._ready(alias)
            if connection is not None and self._caught_up(self.health[alias], needed, connection):
                state.replica = alias
                self.health[alias].reads += 1
                return alias
        return None

    def _weighted_order(self, usable: list[str]) -> list[str]:
        """``usable`` in the order to try: the weighted round robin's pick first, then the others
        by their credit (the ones that are owed most reads). Weight 0 replicas come last."""
        ordered: list[str] = []
        with self._lock:
            weighted = [alias for alias in usable if self.weights[alias] > 0]
            if weighted:
                credit = self._credit
                for alias in weighted:
                    credit[alias] += self.weights[alias]
                chosen = max(weighted, key=credit.__getitem__)
                credit[chosen] -= sum(self.weights[alias] for alias in weighted)
                others = sorted((a for a in weighted if a != chosen), key=lambda alias: -credit[alias])
                ordered = [chosen, *others]
        # A replica of weight 0 takes reads only as a last resort, before the primary.
        return ordered + [alias for alias in usable if self.weights[alias] <= 0]

    def _to_primary(self) -> str:
        self.primary_reads += 1
        return self.primary

    def _ready(self, alias: str) -> BaseDatabaseWrapper | None:
        """The alias's connection, opened if needed; None (and the replica marked down) if it cannot be."""
        connection = connections[alias]
        if connection.connection is None:
            try:
                connection.ensure_connection()
            except DatabaseError as exc:
                self.mark_down(alias, f"connect failed: {type(exc).__name__}")
                return None
        if failover.retry_elsewhere not in connection.execute_wrappers:
            failover.ensure_installed(connection, failover.retry_elsewhere)
        if self.health[alias].mirror:
            _make_read_only(connection)
        return connection

    def _caught_up(self, health: ReplicaHealth, lsn: int, connection: BaseDatabaseWrapper) -> bool:
        if not lsn or health.mirror or known_caught_up(health, lsn, connection):
            return True
        seen: tuple[Any, ServerIdentity | None] = getattr(connection, _SERVER_ATTR, _UNSEEN)
        return self._probe(health, lsn, connection, seen)

    def _probe(
        self, health: ReplicaHealth, lsn: int, connection: BaseDatabaseWrapper, seen: tuple[Any, ServerIdentity | None]
    ) -> bool:
        """Ask the replica how far it has replayed, unless it was found behind a moment ago."""
        alias = health.alias
        server, replay = health.position
        raw = connection.connection
        if seen[0] is raw:
            if seen[1] == server and server is not None:
                # The same server under another identity object (the monitor re-read it).
                seen = (raw, server)
                setattr(connection, _SERVER_ATTR, seen)
                if replay >= lsn:
                    return True
            now = time.monotonic()
            if seen[1] is server and now - health.probed_at < PROBE_INTERVAL:
                return False
        else:
            # A new connection: probed once whatever the interval, to learn where it goes.
            seen = _UNSEEN
            now = time.monotonic()
        health.probed_at = now
        identity: ServerIdentity | None
        try:
            if seen[1] is None and raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                (text,), identity = fetch_identified(raw, PROBE_SQL)
            else:
                # Known server, or inside a transaction (the probe must not be able to fail there).
                row = raw.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()
                text, identity = (row[0] if row else None), seen[1]
        except psycopg.Error as exc:
            if failover.failure_kind(exc) == failover.CONNECTION:
                self.mark_down(alias, f"probe failed: {type(exc).__name__}")
                failover.close_quietly(connection)
            return False
        if text is None:
            self.mark_down(alias, "not in recovery: this server is not a standby (promoted?)")
            return False
        replayed = parse_lsn(text)
        if identity is not None:
            with health.lock:
                kept = self._note_position(health, identity, replayed)
            setattr(connection, _SERVER_ATTR, (raw, kept))
        return replayed >= lsn

    def _note_position(self, health: ReplicaHealth, identity: ServerIdentity, lsn: int) -> ServerIdentity:
        """Remember that ``identity`` has replayed up to ``lsn`` (health.lock held).

        Returns the identity object kept, so connections on that server compare by ``is``."""
        server, replay = health.position
        if identity == server and server is not None:
            if lsn > replay:
                health.position = (server, lsn)
            return server
        if server is not None:
            # Positions are per server: another one's says nothing about this one.
            logger.warning(
                "replica %s: another server answers (%s; was %s): its replay position is read afresh",
                health.alias,
                identity.describe(),
                server.describe(),
            )
        health.position = (identity, lsn)
        return identity

    def resolve_write_position(self, state: RoutingState) -> None:
        """After a write, remember where the primary's WAL is: reads must see at least that."""
        primary = connections[self.primary]
        if primary.in_atomic_block:
            return  # not committed yet; taken after the commit, when reads may leave the primary
        state.wrote = False
        try:
            lsn, timeline = self._primary_position()
        except (DatabaseError, psycopg.Error) as exc:
            # The position is unknown: fall back to a time pin, the safety net.
            state.pin_until = time.time() + float(conf.SCALEOPS_ROUTER_PIN_SECONDS)
            logger.warning("could not read the primary's WAL position (%s); reads pinned by time", type(exc).__name__)
            return
        # Positions of two timelines do not compare: the newer timeline's replaces the other.
        same = state.timeline in (None, timeline)
        state.min_lsn = max(state.min_lsn, lsn) if same else lsn
        state.timeline = timeline

    def _primary_position(self) -> tuple[int, int]:
        """The primary's WAL insert position and timeline, read now on the Django connection."""
        primary = connections[self.primary]
        try:
            primary.ensure_connection()
            # The insert position, not the write position: with synchronous_commit off the commit
            # record may still sit in WAL buffers, past pg_current_wal_lsn().
            row = primary.connection.execute(POSITION_SQL).fetchone()
        except psycopg.Error as exc:
            if failover.failure_kind(exc) == failover.CONNECTION and not primary.in_atomic_block:
                failover.close_quietly(primary)  # the next use connects to the new primary
            raise
        assert row is not None
        lsn, timeline = parse_lsn(row[0]), int(row[1][:8], 16)
        self._note_primary_timeline(timeline)
        return lsn, timeline

    def _note_primary_timeline(self, timeline: int) -> None:
        if self.primary_timeline is not None and timeline != self.primary_timeline:
            logger.warning(
                "the primary %s is on timeline %d (was %d): a standby was promoted; positions of"
                " timeline %d are not trusted any more",
                self.primary,
                timeline,
                self.primary_timeline,
                self.primary_timeline,
            )
        self.primary_timeline = timeline

    def _old_timeline(self, state: RoutingState) -> bool:
        """The client's position is of another timeline than the primary's (or the primary's is
        not known yet): True when it is, after which the position is the primary's current one.

        Replay positions of two timelines do not compare (the promoted standby's history forks
        from the old primary's), so this read goes to the primary; later reads need replicas
        that have replayed the new primary's position, which includes all that survived.
        """
        try:
            lsn, timeline = self._primary_position()
        except (DatabaseError, psycopg.Error):
            return True  # the primary answers (or fails) this read; the position stays for the next
        if timeline == state.timeline:
            return False
        logger.info(
            "a read-your-writes position of timeline %s arrived; the primary is on %d: read from the primary",
            state.timeline,
            timeline,
        )
        state.min_lsn, state.timeline = lsn, timeline
        return True

    # ---- health ------------------------------------------------------------------------

    def ensure_monitor(self) -> None:
        monitor = self._monitor
        if monitor is not None and monitor.is_alive():
            return
        with self._lock:
            if self._monitor is None or not self._monitor.is_alive():
                self._monitor = HealthMonitor(self.check_round, self.check_interval)
                self._monitor.start()

    def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.stop()
        for conn in self._check_conns.values():
            conn.close()

    def check_interval(self) -> float:
        if self.shared is not None:
            return float(conf.SCALEOPS_ROUTER_SHARED_CHECK_INTERVAL)
        return float(conf.SCALEOPS_ROUTER_CHECK_INTERVAL)

    def check_round(self) -> None:
        """One round of the monitor: check the replicas, or, with shared health, let the process
        holding the lease check them and take what it published."""
        shared = self.shared
        if shared is not None and not shared.lead():
            snapshot = shared.read()
            if snapshot is not None:
                self.apply_snapshot(snapshot)
                return
        self.check_all()
        if shared is not None and shared.leading:
            shared.publish(self.snapshot())

    def snapshot(self) -> dict[str, Any]:
        """What a leader publishes: each replica's health as this process knows it."""
        published = {}
        for alias, h in self.health.items():
            with h.lock:
                server, replay = h.position
                published[alias] = {
                    "state": h.state,
                    "good_checks": h.good_checks,
                    "lag_seconds": h.lag_seconds,
                    "lag_bytes": h.lag_bytes,
                    "last_check": h.last_check,
                    "last_error": h.last_error,
                    "position": [list(server) if server else None, replay],
                    "checked": list(h.checked) if h.checked else None,
                }
        return published

    def apply_snapshot(self, snapshot: dict[str, Any]) -> None:
        """Take the leader's findings as this process's own (no check of ours ran)."""
        taken_at = float(snapshot["at"])
        for alias, entry in snapshot["replicas"].items():
            health = self.health.get(alias)
            if health is None:
                continue
            with health.lock:
                if entry["state"] != DOWN and health.down_at > taken_at:
                    continue  # we saw it fail after the leader's check: it stays out until the next one
                server, replay = entry["position"]
                if server is not None:
                    self._note_position(health, ServerIdentity(*server), int(replay))
                health.checked = ServerIdentity(*entry["checked"]) if entry["checked"] else None
                health.good_checks = int(entry["good_checks"])
                health.lag_seconds, health.lag_bytes = entry["lag_seconds"], entry["lag_bytes"]
                health.last_check, health.last_error = entry["last_check"], str(entry["last_error"])
                old_state, health.state = health.state, str(entry["state"])
            if old_state != health.state:
                self._announce(alias, old_state, health.state, health.last_error)
        self._note_availability(any(h.state == HEALTHY for h in self.health.values()))

    def check_all(self) -> None:
        self.checks_run += 1
        timeout = float(conf.SCALEOPS_ROUTER_CHECK_TIMEOUT)
        primary_lsn: int | None = None
        primary_conn = self._check_conn(self.primary, self._primary_params, timeout)
        try:
            text, walfile = primary_conn.fetchone(POSITION_SQL)
            primary_lsn = parse_lsn(text)
            self._note_primary_timeline(int(walfile[:8], 16))
            # With several hosts in HOST (target_session_attrs=read-write), which one answers.
            info = primary_conn.conn.info if primary_conn.conn is not None else None
            identity = primary_conn.identity
            self.primary_server = {
                "host": info.host if info else None,
                "port": info.port if info else None,
                "timeline": self.primary_timeline,
                "system_identifier": identity.system_identifier if identity else None,
            }
        except psycopg.Error:
            logger.warning("health check could not read the primary's WAL position")
        for alias in self.replicas:
            conn = self._check_conn(alias, self._check_params[alias], timeout)
            result = check_replica(conn, primary_lsn, mirror=self.health[alias].mirror, primary=primary_conn.identity)
            self.record_check(alias, result)
        self._note_availability(any(h.state == HEALTHY for h in self.health.values()))

    def _check_conn(self, alias: str, params: dict[str, Any], timeout: float) -> CheckConnection:
        conn = self._check_conns.get(alias)
        if conn is None:
            conn = self._check_conns[alias] = CheckConnection(params, timeout)
        return conn

    def record_check(self, alias: str, result: CheckResult) -> None:
        health = self.health[alias]
        with health.lock:
            health.last_check = time.time()
            # The check reached another server than the one the previous checks measured: what
            # they earned (good checks, healthy) was earned by that other server.
            replaced = result.identity is not None and health.checked not in (None, result.identity)
            if replaced:
                assert result.identity is not None and health.checked is not None
                health.good_checks = 0
                health.last_error = f"another server answers: {result.identity.describe()}"
                logger.warning(
                    "replica %s: the health check reached another server (%s; was %s): re-admission starts over",
                    alias,
                    result.identity.describe(),
                    health.checked.describe(),
                )
            if result.identity is not None:
                health.checked = result.identity
            if not result.ok:
                health.good_checks = 0
                health.last_error = result.error
                new_state = DOWN
            else:
                if result.identity is not None:
                    self._note_position(health, result.identity, result.replay_lsn)
                health.lag_seconds, health.lag_bytes = result.lag_seconds, result.lag_bytes
                lagging = result.lag_seconds > float(conf.SCALEOPS_ROUTER_MAX_LAG_SECONDS) and result.lag_bytes > int(
                    conf.SCALEOPS_ROUTER_MAX_LAG_BYTES
                )
                if lagging:
                    health.good_checks = 0
                    new_state = LAGGING
                else:
                    health.good_checks += 1
                    readmitted = health.good_checks >= int(conf.SCALEOPS_ROUTER_READMIT_CHECKS)
                    stays = health.state == HEALTHY and not replaced
                    new_state = HEALTHY if stays or readmitted else RECOVERING
                    if new_state == HEALTHY:
                        health.last_error = ""
            old_state, health.state = health.state, new_state
        if old_state != new_state:
            self._announce(alias, old_state, new_state, health.last_error)

    def reroute_failed_read(self, connection: BaseDatabaseWrapper, exc: BaseException, kind: str) -> str:
        """A read failed on a replica with ``kind`` (``failover.CONNECTION`` or ``CONFLICT``):
        update the replica's health and return the alias to run it on instead.

        The caller has closed its cursor. A recovery conflict cancelled one statement of a working
        server: the replica stays in rotation and the primary, which has no replay to conflict
        with, answers (another standby replaying the same WAL would likely cancel it too).
        """
        alias = connection.alias
        health = self.health[alias]
        health.failovers += 1
        self.fallback_reads += 1
        sqlstate = getattr(exc, "sqlstate", None) or getattr(exc.__cause__, "sqlstate", None)
        if kind == failover.CONFLICT:
            health.conflicts += 1
            raw = connection.connection
            if raw is None or raw.closed or raw.broken:
                # A conflict while idle in a transaction ends the session: reopened on next use.
                failover.close_quietly(connection)
            logger.info(
                "read on replica %s cancelled by recovery (SQLSTATE %s); retried on the primary", alias, sqlstate
            )
            return self.primary
        self.mark_down(alias, f"read failed: {type(exc).__name__} (SQLSTATE {sqlstate})")
        failover.close_quietly(connection)
        # At least as far as this request may already have read there.
        target = self.pick_replica(current_state(), exclude=alias, floor=health.replay_lsn) or self.primary
        logger.warning("read on replica %s failed (%s); retried on %s", alias, type(exc).__name__, target)
        return target

    def mark_down(self, alias: str, reason: str) -> None:
        """Take a replica out at once (a failed read), without waiting for the next check."""
        health = self.health[alias]
        with health.lock:
            old_state, health.state = health.state, DOWN
            health.good_checks = 0
            health.last_error = reason
            health.down_at = time.time()
        if old_state != DOWN:
            self._announce(alias, old_state, DOWN, reason)
            self._note_availability(any(h.state == HEALTHY for h in self.health.values()))

    def _announce(self, alias: str, old: str, new: str, reason: str) -> None:
        log = logger.info if new in (HEALTHY, RECOVERING) else logger.warning
        log("replica %s: %s -> %s%s", alias, old, new, f" ({reason})" if reason and new == DOWN else "")
        signals.replica_state_changed.send(sender=_router_class(), alias=alias, state=new)

    def _note_availability(self, any_usable: bool) -> None:
        if not self.replicas or self.all_down == (not any_usable):
            return
        self.all_down = not any_usable
        if self.all_down:
            logger.error("no replica is usable: every read goes to the primary %s", self.primary)
            signals.replica_state_changed.send(sender=_router_class(), alias=None, state="primary_fallback")
        else:
            logger.warning("a replica is usable again: reads leave the primary")
            signals.replica_state_changed.send(sender=_router_class(), alias=None, state="replicas_available")

    # ---- status ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        replicas = {
            alias: {
                "state": h.state,
                "weight": self.weights[alias],
                "mirror": h.mirror,
                "replay_lsn": format_lsn(h.replay_lsn) if h.replay_lsn else None,
                "server": h.checked._asdict() if h.checked else None,
                "lag_seconds": h.lag_seconds,
                "lag_bytes": h.lag_bytes,
                "good_checks": h.good_checks,
                "last_check": h.last_check,
                "last_error": h.last_error,
                "reads": h.reads,
                "failovers": h.failovers,
                "conflicts": h.conflicts,
            }
            for alias, h in self.health.items()
        }
        return {
            "configured": True,
            "primary": self.primary,
            "primary_server": self.primary_server,
            "replicas": replicas,
            "degraded": any(h.state != HEALTHY for h in self.health.values()),
            "all_replicas_down": bool(self.replicas) and not any(h.state == HEALTHY for h in self.health.values()),
            "primary_reads": self.primary_reads,
            "failover_reads": self.fallback_reads,
            "health": {
                "shared": self.shared is not None,
                "role": self.shared.role() if self.shared is not None else "local",
                "snapshot_at": self.shared.snapshot_at if self.shared is not None else None,
                "checks_run": self.checks_run,
            },
        }


def known_caught_up(health: ReplicaHealth, lsn: int, connection: BaseDatabaseWrapper) -> bool:
    """Whether the replica is known, without asking it, to have replayed ``lsn`` (a replica's
    answer, not a mirror's: ``lsn`` is not 0).

    The remembered position counts only on a connection known to reach the server it was read
    from: a connection to a re-cloned standby or another server behind the same address is
    probed instead. Runs for most reads of a client that wrote: keep it to these lookups.
    """
    server, replay = health.position
    seen: tuple[Any, ServerIdentity | None] = getattr(connection, _SERVER_ATTR, _UNSEEN)
    return replay >= lsn and seen[1] is server and seen[0] is connection.connection


def _shared_health(primary: str, replicas: list[str]) -> SharedHealth | None:
    alias = conf.SCALEOPS_ROUTER_HEALTH_CACHE_ALIAS
    if not alias or not replicas:
        return None
    if alias not in settings.CACHES:
        logger.error("SCALEOPS_ROUTER_HEALTH_CACHE_ALIAS %r is not a CACHES alias: each process checks alone", alias)
        return None
    dicts = {a: connections[a].settings_dict for a in (primary, *replicas)}
    return SharedHealth(alias, dicts, float(conf.SCALEOPS_ROUTER_SHARED_CHECK_INTERVAL))


def _weights(replicas: list[str]) -> dict[str, int]:
    configured: dict[str, object] = dict(conf.SCALEOPS_ROUTER_REPLICA_WEIGHTS)  # as the project wrote them
    weights = {}
    for alias in replicas:
        weight = configured.get(alias, 1)
        # scaleops.E108 reports a bad weight; at run time it counts as the default, 1.
        weights[alias] = weight if isinstance(weight, int) and not isinstance(weight, bool) and weight >= 0 else 1
    return weights


def _is_mirror(replica: dict[str, Any], primary: dict[str, Any]) -> bool:
    return all(replica.get(key) == primary.get(key) for key in ("HOST", "PORT", "NAME"))


def _make_read_only(connection: BaseDatabaseWrapper) -> None:
    # A test mirror is the primary's database: make it refuse writes as a real standby would.
    raw = connection.connection
    if getattr(connection, "_scaleops_read_only", None) is not raw:
        raw.execute("SET default_transaction_read_only = on")
        connection._scaleops_read_only = raw  # type: ignore[attr-defined]


def _router_class() -> type:
    """The installed router's class (the sender of ``replica_state_changed``), found by its marker
    attribute rather than imported: the router imports this module."""
    from django.db import router

    for candidate in router.routers:
        if getattr(candidate, "routes_to_replicas", False):
            return type(candidate)
    return type(None)


# ---- the process's pool ----------------------------------------------------------------

_pool: ReplicaPool | None = None
_pool_lock = threading.Lock()
_router_installed: bool | None = None


def get_pool() -> ReplicaPool | None:
    """The pool, or None when ``PrimaryReplicaRouter`` is not in ``DATABASE_ROUTERS``."""
    global _pool, _router_installed
    pool = _pool
    if pool is not None:
        return pool
    if _router_installed is None:
        from django.db import router

        _router_installed = any(getattr(r, "routes_to_replicas", False) for r in router.routers)
    if not _router_installed:
        return None
    with _pool_lock:
        if _pool is None:
            primary, replicas = _configured_aliases()
            if primary is None:
                _router_installed = False  # off until the settings change
                return None
            _pool = ReplicaPool(primary, replicas)
        return _pool


failover.use_pool(get_pool)  # the failover wrappers find the pool through this, not an import


def _configured_aliases() -> tuple[str | None, list[str]]:
    """The configured aliases that exist. Unknown ones are left out (scaleops.E101/E102 name
    them) so that a typo degrades to primary-only routing instead of failing every query."""
    primary = str(conf.SCALEOPS_ROUTER_PRIMARY_ALIAS)
    known = connections.settings
    if primary not in known:
        logger.error("SCALEOPS_ROUTER_PRIMARY_ALIAS %r is not a database alias: the router is off", primary)
        return None, []
    replicas = []
    for alias in conf.SCALEOPS_ROUTER_REPLICA_ALIASES:
        if alias in known and alias != primary:
            replicas.append(str(alias))
        else:
            logger.error("replica alias %r is not a database alias other than the primary: ignored", alias)
    return primary, replicas


def _forget_pool_in_child() -> None:
    # After a fork (gunicorn --preload, multiprocessing) the monitor thread is gone and the
    # parent's connections must not be shared: the child builds its own pool on first use.
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_pool_in_child)


def reset_pool() -> None:
    """Forget the pool (settings changed); its monitor stops."""
    global _pool, _router_installed
    with _pool_lock:
        if _pool is not None:
            _pool.stop()
        _pool = None
        _router_installed = None


def replica_status(*, refresh: bool = False) -> dict[str, Any]:
    """Each replica's state, lag and counters; with ``refresh``, check them all first.

    Returns ``{"configured": False}`` when the router is not installed.
    """
    pool = get_pool()
    if pool is None:
        return {"configured": False}
    if refresh:
        pool.check_all()
    return pool.status()


def metrics_source() -> dict[str, Any]:
    pool = _pool
    return pool.status() if pool is not None else {"configured": False}
