"""``PrimaryReplicaRouter``: writes to the primary, reads to a replica that has what you wrote."""

from __future__ import annotations

from asyncio import _get_running_loop
from threading import get_ident
from typing import Any

from django.db.models import Model

from django_scaleops.replicas import routing
from django_scaleops.replicas.failover import retry_elsewhere, track_writes
from django_scaleops.replicas.health import HEALTHY
from django_scaleops.replicas.routing import get_pool, known_caught_up
from django_scaleops.replicas.state import _migrating, _primary_depth, _state, current_state, describe


class PrimaryReplicaRouter:
    """Route writes and migrations to the primary and reads to healthy, caught-up replicas.

    Configure with ``SCALEOPS_ROUTER_PRIMARY_ALIAS`` and ``SCALEOPS_ROUTER_REPLICA_ALIASES``
    and add ``"django_scaleops.routers.PrimaryReplicaRouter"`` to ``DATABASE_ROUTERS``.
    ``.using(alias)`` always wins: Django does not ask a router then.
    """

    routes_to_replicas = True  # how the replica pool finds this router among DATABASE_ROUTERS

    def db_for_read(self, model: type[Model], **hints: Any) -> str | None:
        # The fast path: this context's previous read went to a replica and nothing it depended
        # on changed. Every condition of the full decision (``ReplicaPool.db_for_read``) is
        # checked again, on objects the route keeps instead of looking them up: the same pool
        # (settings unchanged), thread and replica; no transaction, write, pin, use_primary() or
        # migration; the primary's timeline; the replica healthy, on the same connection, the
        # failover wrappers in place and the write position replayed. Anything else: the full
        # decision, which takes a new route.
        state = _state.get()
        if (
            state is not None
            and (route := state.route) is not None
            and (pool := routing._pool) is not None
            and route.pool is pool
            and route.alias is state.replica
            and route.thread == get_ident()
            and not (state.wrote or state.pin_until or _primary_depth.get() or _migrating.get())
            and (state.timeline is None or state.timeline == pool.primary_timeline)
            and _get_running_loop() is None  # an event loop's connections are per task, not per thread
        ):
            primary, replica, health = route.primary, route.replica, route.health
            if (
                not (primary.in_atomic_block or primary.needs_rollback)
                and health.state == HEALTHY
                and replica.connection is route.raw
                and track_writes in primary.execute_wrappers
                and retry_elsewhere in replica.execute_wrappers
                and (not state.min_lsn or health.mirror or known_caught_up(health, state.min_lsn, replica))
            ):
                health.reads += 1
                return route.alias
        pool = get_pool()
        return pool.db_for_read() if pool is not None else None

    def db_for_write(self, model: type[Model], **hints: Any) -> str | None:
        pool = get_pool()
        return pool.db_for_write() if pool is not None else None

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool | None:
        pool = get_pool()
        if pool is not None and {obj1._state.db, obj2._state.db} <= pool.aliases:
            return True
        return None

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool | None:
        pool = get_pool()
        if pool is None or db not in pool.aliases:
            return None
        return db == pool.primary


def capture_read_position() -> str | None:
    """The primary WAL position this context has written up to, to hand to a background task.

    Pass the value to the task and wrap its work in ``restore_read_position(value)``: its reads
    then see everything the caller wrote. ``None`` when nothing was written. Inside ``atomic()``
    the transaction's own writes are not committed yet: capture from ``transaction.on_commit``.
    """
    pool = get_pool()
    state = current_state()
    if pool is not None and state.wrote:
        pool.resolve_write_position(state)
    return describe(state)
