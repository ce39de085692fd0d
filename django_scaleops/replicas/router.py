"""``PrimaryReplicaRouter``: writes to the primary, reads to a replica that has what you wrote."""

from __future__ import annotations

from typing import Any

from django.db.models import Model

from django_scaleops.replicas.routing import get_pool
from django_scaleops.replicas.state import current_state, describe


class PrimaryReplicaRouter:
    """Route writes and migrations to the primary and reads to healthy, caught-up replicas.

    Configure with ``SCALEOPS_ROUTER_PRIMARY_ALIAS`` and ``SCALEOPS_ROUTER_REPLICA_ALIASES``
    and add ``"django_scaleops.routers.PrimaryReplicaRouter"`` to ``DATABASE_ROUTERS``.
    ``.using(alias)`` always wins: Django does not ask a router then.
    """

    routes_to_replicas = True  # how the replica pool finds this router among DATABASE_ROUTERS

    def db_for_read(self, model: type[Model], **hints: Any) -> str | None:
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
