"""Redis Cluster for django-redis: ``ClusterClient`` as ``CACHES[...]["OPTIONS"]["CLIENT_CLASS"]``.

See docs/cache.md and docs/ratelimit.md, "Redis Cluster".
"""

from __future__ import annotations

from django_scaleops.redis_cluster.client import ClusterClient, is_cluster, slot_prefix

__all__ = ["ClusterClient", "is_cluster", "slot_prefix"]
