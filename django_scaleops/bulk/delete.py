"""``batch_delete``: short transactions by primary-key range, or Django's collector when Python must run."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models.deletion import Collector

from django_scaleops.bulk.process import keyset_batches
from django_scaleops.bulk.result import BatchResult
from django_scaleops.bulk.runner import BatchRunner, Outcome, positive_int, write_alias
from django_scaleops.conf import conf


def needs_collector(queryset: models.QuerySet[Any], using: str) -> bool:
    """True when deleting must run Python: signal receivers, cascades, generic relations, parents."""
    return not Collector(using=using, origin=queryset).can_fast_delete(queryset)


def batch_delete(queryset: models.QuerySet[Any], *, batch_size: int | None = None, **options: Any) -> BatchResult:
    """Delete the queryset's rows in batches; see ``BulkQuerySet.batch_delete``."""
    if queryset.query.is_sliced:
        raise TypeError("Cannot use 'limit' or 'offset' with batch_delete().")
    if queryset._fields is not None:  # type: ignore[attr-defined]
        raise TypeError("Cannot call batch_delete() after .values() or .values_list().")
    if queryset.query.distinct or queryset.query.distinct_fields:
        raise TypeError("Cannot call batch_delete() after .distinct().")
    model = queryset.model
    using = write_alias(queryset)
    size = positive_int("batch_size", conf.SCALEOPS_BULK_BATCH_SIZE if batch_size is None else batch_size)
    target = queryset.using(using).order_by()
    collector = needs_collector(target, using)

    def delete(pks: list[Any]) -> Outcome:
        # Keys come sorted, so their range is exact and needs no IN list; the filter is applied
        # again, so a row changed since its key was read is left alone.
        batch = target.filter(pk__gte=pks[0], pk__lte=pks[-1])
        if collector:
            return Outcome(batch.delete()[1].get(model._meta.label, 0), pks)
        return Outcome(int(batch._raw_delete(using)), pks)

    runner: BatchRunner[Any] = BatchRunner(model=model, using=using, operation="delete", **options)
    return runner.run(keyset_batches(target.values_list("pk", flat=True), size, key="pk"), delete)
