"""``PartitionedQuerySet``: rows of a co-partitioned child take their parent's partition key."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, TypeVar

from django.db import models

_M = TypeVar("_M", bound=models.Model)
FILL_CHUNK_ROWS = 1000  # instances whose parents are looked up in one query


class PartitionedQuerySet(models.QuerySet[_M]):
    """``bulk_create`` fills ``created_at`` from the referenced row, as ``PartitionedModel.save()`` does."""

    def bulk_create(self, objs: Iterable[_M], *args: Any, **kwargs: Any) -> list[_M]:
        from django_scaleops.partitioning.constraints import fill_partition_keys

        objs = list(objs)
        fill_partition_keys(self.model, objs, using=self.db)
        return super().bulk_create(objs, *args, **kwargs)


def with_partition_keys(model: type[models.Model], rows: Iterable[Any], *, using: str | None) -> Iterable[Any]:
    """``rows`` with the partition keys of model instances filled from their parents, a chunk at a
    time (lazily: a generator stays a generator). Mappings and tuples pass as they are."""
    from django_scaleops.partitioning.constraints import PartitionedForeignKey, fill_partition_keys

    if not any(isinstance(c, PartitionedForeignKey) for c in model._meta.constraints):
        return rows  # nothing to fill: no cost

    def filled() -> Iterator[Any]:
        source = iter(rows)
        while chunk := list(islice(source, FILL_CHUNK_ROWS)):
            instances = [row for row in chunk if isinstance(row, models.Model)]
            if instances:
                fill_partition_keys(model, instances, using=using)
            yield from chunk

    return filled()
