"""``batch_update``: ``UPDATE ... FROM (VALUES ...)`` for small batches, a COPY'd temp table for large ones."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any

from django.db import connections, models
from django.db.backends.base.base import BaseDatabaseWrapper

from django_scaleops.bulk.columns import (
    chunks_of,
    column_of,
    copy_values,
    create_temp_like,
    drop_temp,
    max_rows_per_statement,
    slow_converter,
    table_columns,
    temp_table_name,
)
from django_scaleops.bulk.result import BatchResult
from django_scaleops.bulk.runner import BatchRunner, Outcome, chunked, positive_int, write_alias
from django_scaleops.conf import conf

if TYPE_CHECKING:
    Field = models.Field[Any, Any]
VALUES_ALIAS = "scaleops_v"


class Updater:
    def __init__(self, model: type[models.Model], connection: BaseDatabaseWrapper, fields: Sequence[str]) -> None:
        opts = model._meta
        if not fields:
            raise ValueError("batch_update needs fields=[...]: the fields to write.")
        self.model = model
        self.connection = connection
        self.table = opts.db_table
        assert opts.pk is not None
        self.pk: Field = opts.pk
        chosen: list[Field] = []
        for name in fields:
            field = opts.get_field(name)
            if not getattr(field, "concrete", False) or field.many_to_many or not isinstance(field, models.Field):
                raise ValueError(f"batch_update can only write concrete fields; {name!r} is not one.")
            if field.primary_key:
                raise ValueError("batch_update cannot change primary keys: they identify the rows.")
            if field.generated:
                raise ValueError(f"{name!r} is a generated field and cannot be written.")
            if field.model._meta.concrete_model is not opts.concrete_model:
                raise ValueError(f"{name!r} lives in a parent model's table; update it through that model.")
            chosen.append(field)
        self.fields = [self.pk, *chosen]
        self.getter = attrgetter(*(f.attname for f in self.fields))

    def _values(self, obj: Any) -> tuple[Any, ...]:
        if not isinstance(obj, self.model):
            raise TypeError(f"batch_update on {self.model.__name__} got {type(obj).__name__}: pass model instances.")
        values: tuple[Any, ...] = self.getter(obj)
        if values[0] is None:
            raise ValueError(f"batch_update got a {self.model.__name__} without a primary key (unsaved).")
        return values

    def write(self, objs: list[Any]) -> Outcome:
        # Key order: two concurrent updates then lock rows in the same order instead of deadlocking.
        rows = sorted(map(self._values, objs), key=itemgetter(0))
        pks = [row[0] for row in rows]
        if len(rows) > conf.SCALEOPS_BULK_TEMP_TABLE_ROWS:
            return Outcome(self._via_temp_table(rows), pks)
        return Outcome(self._via_values(rows), pks)

    def _set_clause(self, source: str) -> str:
        qn = self.connection.ops.quote_name
        return ", ".join(f"{qn(column_of(f))} = {qn(source)}.{qn(column_of(f))}" for f in self.fields[1:])

    def _where(self, source: str) -> str:
        qn = self.connection.ops.quote_name
        pk = qn(column_of(self.pk))
        return f"{qn(self.table)}.{pk} = {qn(source)}.{pk}"

    def _via_values(self, rows: list[tuple[Any, ...]]) -> int:
        qn = self.connection.ops.quote_name
        catalog = table_columns(self.connection, self.table)
        convert = [slow_converter(f, self.connection) for f in self.fields]
        # The first row's casts give every VALUES column its type (the rest follow, as in UNION).
        first = "(" + ", ".join(f"%s::{catalog[column_of(f)].base_type}" for f in self.fields) + ")"
        other = "(" + ", ".join(["%s"] * len(self.fields)) + ")"
        names = ", ".join(qn(column_of(f)) for f in self.fields)
        step = max_rows_per_statement(len(self.fields))
        count = 0
        with self.connection.cursor() as cursor:
            for begin in range(0, len(rows), step):
                chunk = rows[begin : begin + step]
                params = [c(v) for row in chunk for c, v in zip(convert, row, strict=True)]
                values = ", ".join([first] + [other] * (len(chunk) - 1))
                cursor.execute(
                    f"UPDATE {qn(self.table)} SET {self._set_clause(VALUES_ALIAS)}"
                    f" FROM (VALUES {values}) AS {qn(VALUES_ALIAS)} ({names}) WHERE {self._where(VALUES_ALIAS)}",
                    params,
                )
                count += cursor.rowcount
        return count

    def _via_temp_table(self, rows: list[tuple[Any, ...]]) -> int:
        qn = self.connection.ops.quote_name
        catalog = table_columns(self.connection, self.table)
        temp = temp_table_name()
        columns = [column_of(f) for f in self.fields]
        create_temp_like(self.connection, temp, self.table, columns)
        oids = [catalog[c].oid for c in columns]
        copy_values(self.connection, temp, self.fields, oids, lambda: chunks_of(rows))
        with self.connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {qn(self.table)} SET {self._set_clause(temp)} FROM {qn(temp)} WHERE {self._where(temp)}"
            )
            count = int(cursor.rowcount)
        drop_temp(self.connection, temp)
        return count


def batch_update(
    queryset: models.QuerySet[Any],
    objs: Iterable[Any],
    fields: Sequence[str],
    *,
    batch_size: int | None = None,
    **options: Any,
) -> BatchResult:
    """Write ``fields`` of ``objs`` in batches; see ``BulkQuerySet.batch_update``."""
    model = queryset.model
    using = write_alias(queryset)
    size = positive_int("batch_size", conf.SCALEOPS_BULK_BATCH_SIZE if batch_size is None else batch_size)
    updater = Updater(model, connections[using], fields)
    runner: BatchRunner[Any] = BatchRunner(model=model, using=using, operation="update", **options)
    return runner.run(chunked(objs, size), updater.write)
