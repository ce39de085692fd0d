"""How a model declares itself partitioned, and the registry of partitioned models.

A model opts in by subclassing :class:`PartitionedModel` and (optionally) describing its
partitioning in an inner ``Partitioning`` class::

    class Message(PartitionedModel):
        created_at = models.DateTimeField(default=timezone.now)

        class Partitioning:
            interval = "month"      # day | week | month | quarter | year
            premake = 3             # partitions kept ahead of the current one
            retention = 24          # intervals kept; older ones are archived (None: keep forever)

``SCALEOPS_PARTITION_MODELS = {"chat.Message": {"retention": 12}}`` overrides any option per
model without touching its code.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from django.apps import apps
from django.db import models

from django_scaleops.conf import conf
from django_scaleops.managers import ScaleOpsManager
from django_scaleops.partitioning.errors import PartitioningError
from django_scaleops.partitioning.identifiers import check_identifier, column_of
from django_scaleops.partitioning.intervals import INTERVALS

# Kept for code that imported it from here: ScaleOpsManager is PartitionedModel's manager now.
PartitionedManager = ScaleOpsManager


class PartitionedModel(models.Model):
    """Marks a model as range-partitioned by its ``created_at`` (see ``Partitioning``).

    Django keeps ``id`` as the primary key (so ``get(pk=...)``, relations and the admin work);
    on the database the primary key is ``(id, created_at)``, as PostgreSQL requires. Rows of a
    co-partitioned child (a ``PartitionedForeignKey``) saved without ``created_at`` take their
    parent's, in ``save()`` and ``bulk_create()``.
    """

    objects = ScaleOpsManager()  # bulk operations, cached reads and partition keys filled from parents

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        from django_scaleops.partitioning.constraints import fill_partition_keys

        fill_partition_keys(type(self), [self], using=kwargs.get("using"))
        super().save(*args, **kwargs)


@dataclass(frozen=True)
class PartitionConfig:
    """The partitioning of one model. Options are checked by :meth:`validate`."""

    model: type[models.Model]
    key: str = "created_at"
    interval: str = "month"
    premake: int = 3
    retention: int | None = None
    archive: bool = True
    default_partition: bool = True

    @property
    def label(self) -> str:
        return self.model._meta.label

    @property
    def table(self) -> str:
        return self.model._meta.db_table

    @property
    def key_column(self) -> str:
        return column_of(self.model, self.key)

    def validate(self) -> PartitionConfig:
        if self.interval not in INTERVALS:
            raise PartitioningError(f"{self.label}: interval {self.interval!r} is not one of {', '.join(INTERVALS)}")
        if not _whole(self.premake, 0):
            raise PartitioningError(f"{self.label}: premake must be a whole number >= 0, not {self.premake!r}")
        if self.retention is not None and not _whole(self.retention, 1):
            raise PartitioningError(
                f"{self.label}: retention must be None or a whole number >= 1, not {self.retention!r}"
            )
        check_identifier(self.table, f"{self.label} table name")
        try:
            field = self.model._meta.get_field(self.key)
        except Exception:
            raise PartitioningError(f"{self.label}: partition key {self.key!r} is not a field of the model") from None
        if not isinstance(field, models.DateTimeField):
            raise PartitioningError(f"{self.label}: partition key {self.key!r} must be a DateTimeField")
        check_identifier(self.key_column, f"{self.label} partition key column")
        return self


def _whole(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


OPTION_NAMES = {f.name for f in fields(PartitionConfig)} - {"model"}


def config_for(model: type[models.Model]) -> PartitionConfig | None:
    """The validated partitioning of ``model``, or None if it is not partitioned."""
    if not issubclass(model, PartitionedModel) or model._meta.abstract:
        return None
    declared = getattr(model, "Partitioning", None)
    options: dict[str, Any] = {}
    if declared is not None:
        options = {name: getattr(declared, name) for name in OPTION_NAMES if hasattr(declared, name)}
    overrides = conf.SCALEOPS_PARTITION_MODELS.get(model._meta.label, {})
    unknown = set(overrides) - OPTION_NAMES
    if unknown:
        raise PartitioningError(
            f"SCALEOPS_PARTITION_MODELS[{model._meta.label!r}] has unknown options {sorted(unknown)};"
            f" known: {sorted(OPTION_NAMES)}"
        )
    options.setdefault("premake", conf.SCALEOPS_PARTITION_PREMAKE)
    return replace(PartitionConfig(model=model), **{**options, **overrides}).validate()


def partitioned_models() -> list[PartitionConfig]:
    """Every installed partitioned model, referencing models first (the order archives need)."""
    configs = [c for c in (config_for(m) for m in apps.get_models()) if c is not None]
    return sorted(configs, key=lambda c: (-_depth(c.model, set()), c.label))


def _depth(model: type[models.Model], seen: set[type[models.Model]]) -> int:
    """How long the chain of partitioned foreign keys starting at ``model`` is."""
    from django_scaleops.partitioning.constraints import PartitionedForeignKey

    seen = seen | {model}
    depths = [0]
    for constraint in model._meta.constraints:
        if isinstance(constraint, PartitionedForeignKey):
            target = apps.get_model(constraint.to)
            if target not in seen:
                depths.append(1 + _depth(target, seen))
    return max(depths)


def get_config(label: str) -> PartitionConfig:
    """The partitioning of the model ``app_label.ModelName``; a clear error if there is none."""
    for config in partitioned_models():
        if config.label.lower() == label.lower():
            return config
    known = ", ".join(c.label for c in partitioned_models()) or "none"
    raise PartitioningError(f"{label!r} is not a partitioned model (partitioned models: {known})")
