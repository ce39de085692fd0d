"""System checks for partitioned models (IDs scaleops.E401-E407, W405)."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.db import connections, models

from django_scaleops.checks import postgres_problem, write_alias
from django_scaleops.conf import conf
from django_scaleops.partitioning.config import PartitionedModel, config_for
from django_scaleops.partitioning.errors import PartitioningError
from django_scaleops.partitioning.ids import TimeOrderedIdField


def check_partitioned_models(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    labels = set()
    for model in apps.get_models():
        messages += _time_ordered_ids(model, kwargs.get("databases"))
        if not issubclass(model, PartitionedModel):
            continue
        labels.add(model._meta.label)
        try:
            config = config_for(model)
        except PartitioningError as exc:
            messages.append(
                Error(str(exc), hint="See docs/partitioning.md for the options.", obj=model, id="scaleops.E402")
            )
            continue
        assert config is not None
        messages += _unique_without_key(model, config.key)
        problem = postgres_problem(write_alias(model))
        if problem is not None:
            messages.append(
                Error(
                    f"{model._meta.label} is a PartitionedModel, which needs PostgreSQL 14+, but {problem}.",
                    hint='Use "django.db.backends.postgresql" for that alias (table partitioning is PostgreSQL DDL).',
                    obj=model,
                    id="scaleops.E405",
                )
            )
    if not labels:
        problem = postgres_problem("default")
        if problem is not None:
            messages.append(
                Warning(
                    f"Table partitioning needs PostgreSQL 14+, but {problem}. No model is partitioned yet.",
                    hint='Use "django.db.backends.postgresql" before subclassing PartitionedModel, or add '
                    '"scaleops.W405" to SILENCED_SYSTEM_CHECKS if you will not partition tables.',
                    id="scaleops.W405",
                )
            )
    overrides = conf.SCALEOPS_PARTITION_MODELS
    if isinstance(overrides, dict):
        for label in sorted(set(overrides) - labels):
            messages.append(
                Error(
                    f"SCALEOPS_PARTITION_MODELS names {label!r}, which is not an installed PartitionedModel.",
                    hint=f"Partitioned models: {', '.join(sorted(labels)) or 'none'}.",
                    id="scaleops.E403",
                )
            )
    alias = conf.SCALEOPS_PARTITION_ARCHIVE_STORAGE
    if alias not in settings.STORAGES:
        messages.append(
            Error(
                f"SCALEOPS_PARTITION_ARCHIVE_STORAGE is {alias!r}, which is not a key of STORAGES.",
                hint=f"Use one of {sorted(settings.STORAGES)} or add {alias!r} to STORAGES.",
                id="scaleops.E404",
            )
        )
    return messages


def _unique_without_key(model: type[models.Model], key: str) -> list[CheckMessage]:
    """PostgreSQL refuses a unique index on a partitioned table that lacks the partition key."""
    found: list[tuple[str, tuple[str, ...]]] = []
    for field in model._meta.local_fields:
        if field.unique and not field.primary_key:
            found.append((f"field {field.name!r} (unique=True)", (field.name,)))
    for together in model._meta.unique_together:
        found.append((f"unique_together {tuple(together)!r}", tuple(together)))
    for constraint in model._meta.constraints:
        if isinstance(constraint, models.UniqueConstraint) and constraint.fields:
            found.append((f"UniqueConstraint {constraint.name!r}", tuple(constraint.fields)))
        elif isinstance(constraint, models.UniqueConstraint):
            found.append((f"UniqueConstraint {constraint.name!r} on expressions", ()))
    return [
        Error(
            f"{model._meta.label}: {what} does not include the partition key {key!r}.",
            hint=f"Add {key!r} to it: PostgreSQL enforces uniqueness on a partitioned table only with the"
            " partition key (e.g. fields=[..., 'created_at']).",
            obj=model,
            id="scaleops.E401",
        )
        for what, names in found
        if key not in names
    ]


def _time_ordered_ids(model: type[models.Model], databases: Any) -> list[CheckMessage]:
    """A ``TimeOrderedIdField`` needs a DateTimeField key; with ``--database``, the table's CHECK
    (without it an explicit id could break the scheme, and a lookup by it would miss the row)."""
    pk = model._meta.pk
    if not isinstance(pk, TimeOrderedIdField):
        return []
    try:
        key = model._meta.get_field(pk.key)
    except Exception:
        key = None
    if not isinstance(key, models.DateTimeField):
        return [
            Error(
                f"{model._meta.label}: TimeOrderedIdField(key={pk.key!r}) needs {pk.key!r} to be a DateTimeField"
                " of the model.",
                hint="Give key= the model's partition key (created_at by default).",
                obj=model,
                id="scaleops.E406",
            )
        ]
    alias = write_alias(model)
    if not databases or alias not in databases or connections[alias].vendor != "postgresql":
        return []
    if model._meta.app_label in _apps_with_unapplied_migrations(alias):
        # migrate runs the checks before it applies anything: the migration that installs the
        # CHECK may be among those it is about to apply (a fresh database, an upgrade).
        return []
    constraint = f"{model._meta.db_table}_id_time_ordered"
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(quote_ident(%s)) AND conname = %s",
            [model._meta.db_table, constraint],
        )
        installed = cursor.fetchone() is not None
    if installed:
        return []
    return [
        Error(
            f"{model._meta.label} has a TimeOrderedIdField but its table has no CHECK {constraint!r} on"
            f" database {alias!r}: its ids are not computed from {pk.key!r} by the database.",
            hint=f'Add UseTimeOrderedIds("{model.__name__}") to a migration (in place of the AlterField'
            " makemigrations writes) and migrate.",
            obj=model,
            id="scaleops.E407",
        )
    ]


def _apps_with_unapplied_migrations(alias: str) -> set[str]:
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[alias])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return {migration.app_label for migration, _backwards in plan}
