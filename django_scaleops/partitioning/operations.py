"""Migration operations: create a model's table partitioned, or convert a populated table.

Use them in a migration in place of ``CreateModel`` (``makemigrations`` writes ``CreateModel``;
swap the class name, the arguments are the same)::

    from django_scaleops.partitioning.operations import CreatePartitionedModel

    operations = [CreatePartitionedModel(name="Message", fields=[...], key="created_at")]
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.db import models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.operations.base import Operation
from django.db.migrations.operations.models import CreateModel
from django.db.migrations.state import ProjectState

from django_scaleops.partitioning import intervals
from django_scaleops.partitioning.errors import PartitioningError
from django_scaleops.partitioning.identifiers import check_identifier, qn, ts
from django_scaleops.partitioning.intervals import INTERVALS
from django_scaleops.partitioning.schema import partitioned_table_sql


def create_partitioned_model(
    schema_editor: BaseDatabaseSchemaEditor,
    model: type[models.Model],
    *,
    key: str,
    default_partition: bool,
    interval: str | None,
    premake: int,
    now: datetime | None = None,
) -> None:
    """What ``schema_editor.create_model`` does, for a partitioned table, plus its first partitions."""
    schema_editor.execute(partitioned_table_sql(schema_editor, model, key))
    schema_editor.deferred_sql.extend(schema_editor._model_indexes_sql(model))  # type: ignore[attr-defined]
    for field in model._meta.local_many_to_many:
        through = getattr(field.remote_field, "through", None)
        if through is not None and through._meta.auto_created:
            schema_editor.create_model(through)
    table = model._meta.db_table
    if default_partition:
        name = check_identifier(f"{table}_default", "default partition name")
        schema_editor.execute(f"CREATE TABLE {qn(name)} PARTITION OF {qn(table)} DEFAULT")
    if interval:
        # Like pg_partman's create_parent: the table starts with its current and premade partitions.
        # The table is new and empty here, so PARTITION OF (ACCESS EXCLUSIVE) costs nothing.
        start = intervals.floor(now or datetime.now(UTC), interval)
        for _ in range(premake + 1):
            end = intervals.add(start, interval)
            name = check_identifier(f"{table}_{intervals.suffix(start, interval)}", "partition name")
            schema_editor.execute(
                f"CREATE TABLE {qn(name)} PARTITION OF {qn(table)} FOR VALUES FROM ({ts(start)}) TO ({ts(end)})"
            )
            start = end


class CreatePartitionedModel(CreateModel):
    """``CreateModel`` whose table is ``PARTITION BY RANGE (key)``, with a default partition
    (optional) and the current + ``premake`` partitions of ``interval`` (None: none). Reversible:
    backwards drops the table and its partitions."""

    def __init__(
        self,
        name: str,
        fields: list[tuple[str, models.Field[Any, Any]]],
        options: dict[str, Any] | None = None,
        bases: tuple[Any, ...] | None = None,
        managers: list[tuple[str, models.Manager[Any]]] | None = None,
        *,
        key: str = "created_at",
        default_partition: bool = True,
        interval: str | None = "month",
        premake: int = 3,
    ) -> None:
        if interval is not None and interval not in INTERVALS:
            raise PartitioningError(f"interval {interval!r} is not one of {', '.join(INTERVALS)}")
        self.key = key
        self.default_partition = default_partition
        self.interval = interval
        self.premake = premake
        super().__init__(name, fields, options=options, bases=bases, managers=managers)

    def deconstruct(self) -> tuple[str, Sequence[Any], dict[str, Any]]:
        _, args, kwargs = super().deconstruct()
        kwargs.update(
            key=self.key, default_partition=self.default_partition, interval=self.interval, premake=self.premake
        )
        return self.__class__.__name__, args, kwargs

    def database_forwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        model = to_state.apps.get_model(app_label, self.name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            create_partitioned_model(
                schema_editor,
                model,
                key=self.key,
                default_partition=self.default_partition,
                interval=self.interval,
                premake=self.premake,
            )

    def database_backwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        # DROP TABLE on a partitioned table drops its partitions too.
        super().database_backwards(app_label, schema_editor, from_state, to_state)

    def describe(self) -> str:
        return f"Create model {self.name} partitioned by range of {self.key}"


class ConvertToPartitioned(Operation):
    """Turn the existing, populated table of ``model_name`` into a partitioned one, losing no row.

    The old table becomes the first partition, ``[MINVALUE, start of the next interval)``; later
    partitions come from ``ensure_partitions``. Steps, in the migration's transaction (so the
    first ALTER's ACCESS EXCLUSIVE lock lasts until commit: on a large table, prepare steps 1
    and 2 beforehand as docs/partitioning.md shows, and they are reused):

    1. a CHECK covering that range (``scaleops_partition_range``) is added NOT VALID, then
       validated (a full scan);
    2. the primary key becomes ``(id, key)`` (one build of ``<table>_pkey_partitioned``);
    3. the table is renamed, the partitioned parent is created under the old name, and the old
       table is attached (the CHECK makes the attach skip its scan) - milliseconds under an
       ACCESS EXCLUSIVE lock;
    4. the identity sequence carries on from the old table's highest id.

    Foreign keys from other tables to this one must be dropped first (``db_constraint=False``).
    Not reversible (detach the first partition and rename it back by hand if needed).
    """

    reversible = False
    reduces_to_sql = False

    def __init__(
        self, model_name: str, *, key: str = "created_at", interval: str = "month", default_partition: bool = True
    ) -> None:
        if interval not in INTERVALS:
            raise PartitioningError(f"interval {interval!r} is not one of {', '.join(INTERVALS)}")
        self.model_name = model_name
        self.key = key
        self.interval = interval
        self.default_partition = default_partition

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return (
            self.__class__.__name__,
            [self.model_name],
            {"key": self.key, "interval": self.interval, "default_partition": self.default_partition},
        )

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        pass  # the model is unchanged for Django: only its storage changes

    def database_forwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        from django_scaleops.partitioning.convert import convert_table

        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            convert_table(
                schema_editor, model, key=self.key, interval=self.interval, default_partition=self.default_partition
            )

    def database_backwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        raise PartitioningError("ConvertToPartitioned cannot be reversed automatically")

    def describe(self) -> str:
        return f"Convert the table of {self.model_name} to range partitions by {self.key}"

    @property
    def migration_name_fragment(self) -> str:
        return f"partition_{self.model_name.lower()}"
