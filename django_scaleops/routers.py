"""Public import path of the primary/replica router and its helpers.

::

    DATABASE_ROUTERS = ["django_scaleops.routers.PrimaryReplicaRouter"]
"""

from __future__ import annotations

from django_scaleops.replicas.failover import ReplicaStreamBroken
from django_scaleops.replicas.router import PrimaryReplicaRouter, capture_read_position
from django_scaleops.replicas.routing import replica_status
from django_scaleops.replicas.state import reset_routing_state, restore_read_position, use_primary

__all__ = [
    "PrimaryReplicaRouter",
    "ReplicaStreamBroken",
    "capture_read_position",
    "replica_status",
    "reset_routing_state",
    "restore_read_position",
    "use_primary",
]
