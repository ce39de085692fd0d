"""Convert a populated table into a partitioned one (see ``ConvertToPartitioned`` for the lock costs)."""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

from django_scaleops.partitioning import intervals
from django_scaleops.partitioning.ddl import RANGE_CHECK, bound_clause, range_condition
from django_scaleops.partitioning.errors import PartitioningError
from django_scaleops.partitioning.identifiers import check_identifier, column_of, pk_column, qn
from django_scaleops.partitioning.introspection import fetch, is_partitioned, referencing_constraints
from django_scaleops.partitioning.schema import partitioned_table_sql


def convert_table(
    schema_editor: BaseDatabaseSchemaEditor,
    model: type[models.Model],
    *,
    key: str,
    interval: str,
    default_partition: bool,
    now: datetime | None = None,
) -> str:
    """Convert ``model``'s table in place; returns the name of the partition holding the old rows."""
    connection = schema_editor.connection
    table = check_identifier(model._meta.db_table, "table name")
    pk_name = pk_column(model)
    key_column = column_of(model, key)
    legacy = check_identifier(f"{table}_legacy", "first partition name")
    if is_partitioned(connection, table):
        return legacy
    references = [r for r in referencing_constraints(connection, table) if r[0] != table]
    if references:
        listed = ", ".join(f"{t}.{c}" for t, c in references)
        raise PartitioningError(
            f"{model._meta.label}: foreign keys reference {table!r} ({listed}); drop them first"
            " (ForeignKey(db_constraint=False), then PartitionedForeignKey after the conversion)"
        )
    upper = intervals.add(intervals.floor(now or datetime.now(UTC), interval), interval)

    def run(sql: str) -> None:
        schema_editor.execute(sql, None)

    # 1. Prove every row fits the first partition: after this, ATTACH does not scan. A CHECK made
    #    ahead of time (outside any transaction, see the docs) is reused.
    prepared_check = fetch(
        connection,
        "SELECT convalidated FROM pg_constraint WHERE conrelid = to_regclass(quote_ident(%s)) AND conname = %s",
        [table, RANGE_CHECK],
    )
    if not prepared_check:
        run(
            f"ALTER TABLE {qn(table)} ADD CONSTRAINT {qn(RANGE_CHECK)}"
            f" CHECK ({range_condition(key_column, None, upper)}) NOT VALID"
        )
    if not (prepared_check and prepared_check[0][0]):
        run(f"ALTER TABLE {qn(table)} VALIDATE CONSTRAINT {qn(RANGE_CHECK)}")
    # 2. The primary key must contain the partition key.
    pk_constraint = fetch(
        connection,
        "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(quote_ident(%s)) AND contype = 'p'",
        [table],
    )
    prepared = check_identifier(f"{table}_pkey_partitioned", "index name")
    run(f"CREATE UNIQUE INDEX IF NOT EXISTS {qn(prepared)} ON {qn(table)} ({qn(pk_name)}, {qn(key_column)})")
    if pk_constraint:
        run(f"ALTER TABLE {qn(table)} DROP CONSTRAINT {qn(pk_constraint[0][0])}")
    run(f"ALTER TABLE {qn(table)} ADD CONSTRAINT {qn(legacy + '_pkey')} PRIMARY KEY USING INDEX {qn(prepared)}")
    # 3. Free the names the new parent will use: the table's, its indexes', its sequence's.
    highest = fetch(connection, f"SELECT coalesce(max({qn(pk_name)}), 0) FROM {qn(table)}")[0][0]
    run(f"ALTER TABLE {qn(table)} ALTER COLUMN {qn(pk_name)} DROP IDENTITY IF EXISTS")
    run(f"ALTER TABLE {qn(table)} ALTER COLUMN {qn(pk_name)} DROP DEFAULT")
    indexes = fetch(
        connection,
        "SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        " WHERE x.indrelid = to_regclass(quote_ident(%s)) AND NOT x.indisprimary ORDER BY i.relname",
        [table],
    )
    for number, (index,) in enumerate(indexes):
        run(f"ALTER INDEX {qn(index)} RENAME TO {qn(check_identifier(f'{legacy[:48]}_idx{number}', 'index name'))}")
    run(f"ALTER TABLE {qn(table)} RENAME TO {qn(legacy)}")
    # 4. The parent under the old name; Django's index and FK statements run at the end of the
    #    migration and adopt the matching indexes and keys of the attached partition (no rebuild).
    run(partitioned_table_sql(schema_editor, model, key))
    schema_editor.deferred_sql.extend(schema_editor._model_indexes_sql(model))  # type: ignore[attr-defined]
    run(f"ALTER TABLE {qn(table)} ATTACH PARTITION {qn(legacy)} {bound_clause(None, upper)}")
    run(f"ALTER TABLE {qn(table)} ALTER COLUMN {qn(pk_name)} RESTART WITH {int(highest) + 1}")
    if default_partition:
        default = check_identifier(f"{table}_default", "default partition name")
        run(f"CREATE TABLE {qn(default)} PARTITION OF {qn(table)} DEFAULT")
    return legacy
