"""The CREATE TABLE of a partitioned model, shared by the migration operation and the table conversion."""

from __future__ import annotations

from django.db import models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

from django_scaleops.partitioning.errors import PartitioningError
from django_scaleops.partitioning.identifiers import check_identifier, column_of, pk_column, qn


def partitioned_table_sql(schema_editor: BaseDatabaseSchemaEditor, model: type[models.Model], key: str) -> str:
    """Django's CREATE TABLE for ``model``, with the primary key widened to ``(pk, key)`` and
    ``PARTITION BY RANGE (key)``. Django still sees ``pk`` alone as the primary key."""
    if model._meta.db_tablespace:
        raise PartitioningError(f"{model._meta.label}: db_tablespace is not supported on partitioned tables")
    pk = model._meta.pk
    assert pk is not None
    pk_name = pk_column(model)
    key_column = column_of(model, key)
    check_identifier(model._meta.db_table, "table name")
    sql, params = schema_editor.table_sql(model)
    if params:
        raise PartitioningError(f"{model._meta.label}: database defaults with parameters are not supported here")
    definition, _ = schema_editor.column_sql(model, pk)
    column = f"{schema_editor.quote_name(pk_name)} {definition}"
    if definition is None or column not in sql or " PRIMARY KEY" not in definition:
        raise PartitioningError(f"{model._meta.label}: could not find the primary key column in {sql!r}")
    sql = sql.replace(column, column.replace(" PRIMARY KEY", ""), 1)
    assert sql.endswith(")")
    return f"{sql[:-1]}, PRIMARY KEY ({qn(pk_name)}, {qn(key_column)})) PARTITION BY RANGE ({qn(key_column)})"
