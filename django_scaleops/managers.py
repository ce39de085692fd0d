"""``ScaleOpsQuerySet`` / ``ScaleOpsManager``: every queryset capability of django-scaleops on one class.

::

    from django_scaleops.managers import ScaleOpsManager

    class Message(PartitionedModel):  # or models.Model
        objects = ScaleOpsManager()

    Message.objects.batch_create(rows)                       # bulk operations (COPY)
    Message.objects.filter(sender=user)[:50].cached(60)      # cache-aside reads
    Message.objects.bulk_create(objs)                        # partition keys filled from parents

It is built from one queryset per capability, each usable alone: ``BulkQuerySet``
(``django_scaleops.bulk``), ``CachedQuerySet`` (``django_scaleops.cache``) and
``PartitionedQuerySet`` (``django_scaleops.partitioning``). ``PartitionedModel`` uses
``ScaleOpsManager``. To add your own methods, subclass ``ScaleOpsQuerySet`` and use
``ScaleOpsManager.from_queryset(YourQuerySet)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from django.db import models

from django_scaleops.bulk import BatchResult, BulkManager, BulkQuerySet
from django_scaleops.cache import CachedManager, CachedQuerySet
from django_scaleops.partitioning.querysets import PartitionedQuerySet, with_partition_keys

_M = TypeVar("_M", bound=models.Model)


# The bases' methods do not overlap: bulk writes, cached reads, and PartitionedQuerySet's
# bulk_create, which fills partition keys and hands on to Django's.
class ScaleOpsQuerySet(PartitionedQuerySet[_M], BulkQuerySet[_M], CachedQuerySet[_M]):  # type: ignore[override]
    """Bulk operations, cached reads and partitioned-model behaviour (see the module docstring)."""

    asks_for_cache = False  # on every PartitionedModel: having it is no request for the cache

    def batch_create(self, rows: Iterable[Any], **options: Any) -> BatchResult:
        # Children of a PartitionedForeignKey take their parent's created_at, as in bulk_create().
        return super().batch_create(with_partition_keys(self.model, rows, using=self.db), **options)


class ScaleOpsManager(models.Manager.from_queryset(ScaleOpsQuerySet)):  # type: ignore[misc]
    """``objects = ScaleOpsManager()``: the manager of ``ScaleOpsQuerySet``."""


__all__ = [
    "BulkManager",
    "BulkQuerySet",
    "CachedManager",
    "CachedQuerySet",
    "PartitionedQuerySet",
    "ScaleOpsManager",
    "ScaleOpsQuerySet",
]
