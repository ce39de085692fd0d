"""Time-ordered ids: a partitioned row's id carries its ``created_at``, so a lookup by id prunes.

An id is ``(milliseconds since 1970-01-01 UTC of created_at) << 21 | (sequence value mod 2**21)``.
The database computes it (a ``BEFORE INSERT`` trigger, for rows inserted without an id), so every
insert path gets it: ``save()``, ``bulk_create()``, ``batch_create()``'s COPY, raw SQL. A CHECK
constraint ties every id from ``TIME_ORDERED_FLOOR`` up to its row's ``created_at``; ids below it
(sequence ids from before the switch, explicit small ids, rows dated before February 1971) are
allowed and looked up without a bound. So a lookup by id can add
``created_at >= <its millisecond> AND created_at < <the next>`` and never miss a row, and
PostgreSQL visits one partition. See docs/partitioning.md, "Lookups by id".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.operations import AlterField
from django.db.migrations.state import ProjectState
from django.db.models.expressions import Col
from django.db.models.lookups import Exact, GreaterThanOrEqual, In, LessThan
from django.db.models.sql.compiler import SQLCompiler

from django_scaleops.partitioning.identifiers import check_identifier, column_of, qn

LOW_BITS = 21  # ids per millisecond of created_at before the low part wraps: 2,097,152
LOW_MASK = (1 << LOW_BITS) - 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)
# Ids from here up carry their created_at (1971-02-02 on); below, no bound is derived.
TIME_ORDERED_FLOOR = 1 << 56
MAX_WINDOWS = 32  # an id__in with more distinct milliseconds gets one window from the first to the last

SQL_FUNCTION = "scaleops_time_ordered_id"


def milliseconds(moment: datetime) -> int:
    """Whole milliseconds from 1970 to ``moment`` (floored, like the database's function)."""
    return (moment - EPOCH) // ONE_MS


def time_ordered_id(created_at: datetime, low: int = 0) -> int:
    """The id the database gives a row of ``created_at`` whose sequence value is ``low``."""
    return (milliseconds(created_at) << LOW_BITS) | (low & LOW_MASK)


def created_at_window(pk: int) -> tuple[datetime, datetime] | None:
    """``[start, end)``, the millisecond that holds the ``created_at`` of the row with id ``pk``,
    or None when ``pk`` is below ``TIME_ORDERED_FLOOR`` (it carries no time)."""
    if pk < TIME_ORDERED_FLOOR:
        return None
    start = EPOCH + timedelta(milliseconds=pk >> LOW_BITS)
    return start, start + ONE_MS


def windows_of(pks: Iterable[int]) -> list[tuple[datetime, datetime]] | None:
    """The ``created_at`` windows covering ``pks``: adjacent milliseconds merged, at most
    ``MAX_WINDOWS`` (else one from the first to the last); None if any id carries no time."""
    stamps = set()
    for pk in pks:
        if pk < TIME_ORDERED_FLOOR:
            return None
        stamps.add(pk >> LOW_BITS)
    if not stamps:
        return None
    ordered = sorted(stamps)
    if len(ordered) > MAX_WINDOWS:
        ordered = [ordered[0], ordered[-1]]
        spans = [(ordered[0], ordered[1] + 1)]
    else:
        spans = []
        for ms in ordered:
            if spans and spans[-1][1] == ms:
                spans[-1] = (spans[-1][0], ms + 1)
            else:
                spans.append((ms, ms + 1))
    return [(EPOCH + timedelta(milliseconds=a), EPOCH + timedelta(milliseconds=b)) for a, b in spans]


class TimeOrderedIdField(models.BigAutoField):  # type: ignore[type-arg]
    """The primary key of a partitioned model whose ids carry ``created_at`` (see the module).

    ``id = TimeOrderedIdField()`` on the model and ``UseTimeOrderedIds("Model")`` in a migration.
    Lookups ``pk=``, ``id=`` and ``id__in=`` add the matching ``created_at`` range to the SQL,
    wherever Django builds them (querysets, ``get()``, ``refresh_from_db()``, ``save()``'s UPDATE,
    deletes, joins), so PostgreSQL prunes to the partition(s) holding those ids.
    """

    # Compiles from its own state: a cached read's key may be shared by querysets built alike.
    scaleops_compiles_from_state = True

    def __init__(self, *args: Any, key: str = "created_at", **kwargs: Any) -> None:
        self.key = key
        kwargs.setdefault("primary_key", True)
        kwargs.setdefault("serialize", False)
        kwargs.setdefault("verbose_name", "ID")
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()
        path = "django_scaleops.partitioning.TimeOrderedIdField"
        for option, default in (("primary_key", True), ("serialize", False), ("verbose_name", "ID")):
            if kwargs.get(option, default) == default:
                kwargs.pop(option, None)
        if self.key != "created_at":
            kwargs["key"] = self.key
        return name, path, args, kwargs


def _key_col(lhs: Any) -> Col | None:
    """The partition key column of the table ``lhs`` (the id column) belongs to, same alias."""
    if not isinstance(lhs, Col) or not isinstance(lhs.target, TimeOrderedIdField):
        return None
    key_field = lhs.target.model._meta.get_field(lhs.target.key)
    assert isinstance(key_field, models.Field)
    return key_field.get_col(lhs.alias)


def _bounded(
    sql: str,
    params: Sequence[Any],
    key: Col,
    windows: list[tuple[datetime, datetime]],
    compiler: SQLCompiler,
    connection: BaseDatabaseWrapper,
) -> tuple[str, list[Any]]:
    parts, all_params = [], list(params)
    for start, end in windows:
        low_sql, low_params = compiler.compile(GreaterThanOrEqual(key, start))
        high_sql, high_params = compiler.compile(LessThan(key, end))
        parts.append(f"({low_sql} AND {high_sql})")
        all_params += [*low_params, *high_params]
    return f"({sql} AND ({' OR '.join(parts)}))", all_params


@TimeOrderedIdField.register_lookup
class TimeOrderedExact(Exact):
    """``id = X AND created_at >= <X's millisecond> AND created_at < <the next>``."""

    scaleops_compiles_from_state = True

    def as_sql(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper) -> tuple[str, list[Any]]:  # type: ignore[override]
        sql, params = super().as_sql(compiler, connection)
        key = _key_col(self.lhs)
        if key is None or not self.rhs_is_direct_value() or type(self.rhs) is not int:
            return sql, list(params)
        window = created_at_window(self.rhs)
        if window is None:
            return sql, list(params)
        return _bounded(sql, params, key, [window], compiler, connection)


@TimeOrderedIdField.register_lookup
class TimeOrderedIn(In):
    """``id IN (...) AND (<created_at windows of those ids>)``."""

    scaleops_compiles_from_state = True

    def as_sql(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper) -> tuple[str, list[Any]]:  # type: ignore[override]
        sql, params = super().as_sql(compiler, connection)
        key = _key_col(self.lhs)
        if key is None or not self.rhs_is_direct_value():
            return sql, list(params)
        values = [v for v in self.rhs if v is not None]
        if not all(type(v) is int for v in values):
            return sql, list(params)
        windows = windows_of(values)
        if windows is None:
            return sql, list(params)
        return _bounded(sql, params, key, windows, compiler, connection)


def _milliseconds_sql(column: str) -> str:
    # floor() of the exact (numeric) epoch, as Python floors: never off at a millisecond's edge,
    # which float8's date_part() could be.
    return f"floor(extract(epoch FROM {column}) * 1000)::bigint"


def install_sql(table: str, key_column: str) -> list[str]:
    """The statements that make ``table`` compute its ids from ``key_column`` (idempotent)."""
    sequence = check_identifier(f"{table}_id_low", "time-ordered id sequence name")
    trigger_function = check_identifier(f"{table}_time_ordered_id", "time-ordered id function name")
    constraint = check_identifier(f"{table}_id_time_ordered", "time-ordered id constraint name")
    return [
        # For SQL written by hand, e.g. the first id of a day. The trigger and the CHECK spell the
        # expression out: a call to this function costs several times the expression per row.
        f"CREATE OR REPLACE FUNCTION {SQL_FUNCTION}(stamp timestamptz, low bigint) RETURNS bigint"
        f" LANGUAGE sql IMMUTABLE PARALLEL SAFE"
        f" RETURN ({_milliseconds_sql('stamp')} << {LOW_BITS}) | (low & {LOW_MASK})",
        f"CREATE SEQUENCE IF NOT EXISTS {qn(sequence)}",
        f"ALTER SEQUENCE {qn(sequence)} OWNED BY {qn(table)}.id",  # dropped with the table
        f"CREATE OR REPLACE FUNCTION {qn(trigger_function)}() RETURNS trigger LANGUAGE plpgsql AS $$"
        f" BEGIN IF NEW.id IS NULL THEN"
        f" NEW.id := ({_milliseconds_sql('NEW.' + qn(key_column))} << {LOW_BITS})"
        f" | (nextval('{qn(sequence)}') & {LOW_MASK});"
        f" END IF; RETURN NEW; END $$",
        f"DROP TRIGGER IF EXISTS {SQL_FUNCTION} ON {qn(table)}",
        # On the parent: PostgreSQL clones it to every partition, and to each one attached later.
        f"CREATE TRIGGER {SQL_FUNCTION} BEFORE INSERT ON {qn(table)}"
        f" FOR EACH ROW EXECUTE FUNCTION {qn(trigger_function)}()",
        # The trigger fills a missing id; an identity default would fill it first.
        f"ALTER TABLE {qn(table)} ALTER COLUMN id DROP IDENTITY IF EXISTS",
        f"ALTER TABLE {qn(table)} DROP CONSTRAINT IF EXISTS {qn(constraint)}",
        f"ALTER TABLE {qn(table)} ADD CONSTRAINT {qn(constraint)} CHECK (id < {TIME_ORDERED_FLOOR}"
        f" OR id >> {LOW_BITS} = {_milliseconds_sql(qn(key_column))})",
    ]


def uninstall_sql(table: str) -> list[str]:
    """Back to an identity column, continuing after the highest id."""
    return [
        f"ALTER TABLE {qn(table)} DROP CONSTRAINT IF EXISTS {qn(table + '_id_time_ordered')}",
        f"DROP TRIGGER IF EXISTS {SQL_FUNCTION} ON {qn(table)}",
        f"DROP FUNCTION IF EXISTS {qn(table + '_time_ordered_id')}()",
        f"DROP SEQUENCE IF EXISTS {qn(table + '_id_low')}",
        f"ALTER TABLE {qn(table)} ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY",
        f"SELECT setval(pg_get_serial_sequence({_literal(table)}, 'id'),"
        f" coalesce((SELECT max(id) FROM {qn(table)}), 0) + 1, false)",
    ]


def _literal(table: str) -> str:
    return "'" + qn(table).replace("'", "''") + "'"


class UseTimeOrderedIds(AlterField):
    """Make ``model_name``'s ids time-ordered: its ``id`` becomes a ``TimeOrderedIdField`` and the
    table gets the trigger, sequence and CHECK of :func:`install_sql`. Existing rows keep their
    ids (below ``TIME_ORDERED_FLOOR``: looked up as before). Reversible."""

    def __init__(self, model_name: str, *, key: str = "created_at") -> None:
        self.key = key
        super().__init__(model_name, "id", TimeOrderedIdField(key=key))

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        kwargs = {"key": self.key} if self.key != "created_at" else {}
        return self.__class__.__name__, [self.model_name], kwargs

    def database_forwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            for statement in install_sql(model._meta.db_table, column_of(model, self.key)):
                schema_editor.execute(statement)

    def database_backwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            for statement in uninstall_sql(model._meta.db_table):
                schema_editor.execute(statement)

    def describe(self) -> str:
        return f"Give {self.model_name} time-ordered ids derived from {self.key}"

    @property
    def migration_name_fragment(self) -> str:
        return f"time_ordered_ids_{self.model_name.lower()}"
