"""Model fields as table columns: catalog types, value preparation and the COPY writer.

Values take one of two roads. The fast road hands Python values straight to psycopg's binary
dumpers, chosen by each column's real type OID; it is only used for field classes whose
``get_db_prep_save`` changes nothing that those dumpers would not reject (a ``str`` for an
``int8`` column raises, it is not silently stored). Any other field (custom fields, encrypted
fields, IP addresses...) always goes through ``get_db_prep_save``, as Django's own ``save()`` does.
A batch the fast road rejects is re-sent with every value prepared by Django.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice, repeat
from operator import is_, itemgetter
from typing import Any

import psycopg
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.expressions import DatabaseDefault
from psycopg import ProgrammingError, pq
from psycopg.abc import Buffer
from psycopg.types.json import Json, Jsonb, JsonbBinaryDumper

from django_scaleops.wrappers import run_through_chain

# Field classes (exact types) whose get_db_prep_save is, for well-typed values, the identity or
# what psycopg's dumper for the column type does anyway.
FAST_FIELD_TYPES: frozenset[type[models.Field[Any, Any]]] = frozenset(
    {
        models.AutoField,
        models.BigAutoField,
        models.SmallAutoField,
        models.IntegerField,
        models.BigIntegerField,
        models.SmallIntegerField,
        models.PositiveIntegerField,
        models.PositiveBigIntegerField,
        models.PositiveSmallIntegerField,
        models.CharField,
        models.TextField,
        models.EmailField,
        models.SlugField,
        models.URLField,
        models.BooleanField,
        models.FloatField,
        models.DecimalField,
        models.DateTimeField,
        models.DateField,
        models.TimeField,
        models.DurationField,
        models.UUIDField,
        models.BinaryField,
    }
)

# Exceptions a psycopg dumper raises for a value of the wrong Python type.
DUMP_ERRORS: tuple[type[Exception], ...] = (TypeError, ValueError, AttributeError, OverflowError)

Converter = Callable[[Any], Any]

# psycopg's C dumpers wrap out-of-range ints around for int2/int4 (2**31 is stored as -2**31) and
# turn too-large floats into infinity for float4, where PostgreSQL would refuse the value. COPY
# checks these ranges itself, as the server would for an INSERT.
INT_RANGES = {21: ("smallint", -(2**15), 2**15 - 1), 23: ("integer", -(2**31), 2**31 - 1)}
FLOAT4_OID = 700
FLOAT4_MAX = 3.4028234663852886e38
BOOL_OID = 16
# Column types whose values COPY checks itself (see column_ok).
CHECKED_OIDS = frozenset({*INT_RANGES, FLOAT4_OID, BOOL_OID})
JSONB_OID = 3802
# Rows read and checked at a time on the fast road while the COPY runs: the server inserts what
# was sent while the next chunk is read (reading the whole batch first would leave it idle).
CHECK_CHUNK_ROWS = 256


class ValueOutOfRange(ValueError):
    """A value the column's type cannot hold (SQLSTATE 22003, as PostgreSQL reports it)."""

    sqlstate = "22003"


def range_guard(oid: int, column: str) -> Converter | None:
    """A check for the column types whose binary dumper would silently store a wrong value."""
    if oid in INT_RANGES:
        name, low, high = INT_RANGES[oid]

        def check_int(value: Any) -> Any:
            if value is not None and not low <= value <= high:
                raise ValueOutOfRange(f"{value!r} is out of range for {name} column {column!r}.")
            return value

        return check_int
    if oid == FLOAT4_OID:

        def check_float(value: Any) -> Any:
            if value is not None and FLOAT4_MAX < abs(value) < float("inf"):
                raise ValueOutOfRange(f"{value!r} is out of range for real column {column!r}.")
            return value

        return check_float
    return None


def column_ok(oid: int, values: list[Any]) -> bool:
    """Whether every value of a column is one its binary dumper stores as PostgreSQL would.

    Integers and reals within the column type's range (``range_guard``), booleans that are
    ``bool`` (the dumper stores any truthy object as true; Django's ``to_python`` would refuse 2
    or "x"). Raises what comparing does (a str for an integer column: TypeError).
    """
    # Built-ins that loop in C (min, max, map, set): this runs over every value of a batch.
    present = [value for value in values if value is not None] if None in values else values
    if not present:
        return True
    if oid in INT_RANGES:
        _, low, high = INT_RANGES[oid]
        return bool(low <= min(present) and max(present) <= high)
    if oid == FLOAT4_OID:
        return not any(FLOAT4_MAX < abs(value) < float("inf") for value in present)
    if oid == BOOL_OID:
        return set(map(type, present)) <= {bool}
    return True


ValueRows = Sequence[Sequence[Any]]


def chunks_of(rows: Iterable[Any]) -> Iterator[list[Any]]:
    """``rows`` in lists of ``CHECK_CHUNK_ROWS``, read lazily."""
    iterator = iter(rows)
    while chunk := list(islice(iterator, CHECK_CHUNK_ROWS)):
        yield chunk


def _then(first: Converter, second: Converter) -> Converter:
    return lambda value: second(first(value))


@dataclass(frozen=True)
class Column:
    name: str
    oid: int
    base_type: str  # without modifiers: casting to varchar(n) would silently truncate


_catalog: dict[tuple[str, str, str], dict[str, Column]] = {}


def table_columns(connection: BaseDatabaseWrapper, db_table: str) -> dict[str, Column]:
    """The table's columns with their type OIDs, read once per alias, database and table."""
    key = (connection.alias, str(connection.settings_dict["NAME"]), db_table)
    columns = _catalog.get(key)
    if columns is None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT attname, atttypid, format_type(atttypid, NULL) FROM pg_attribute"
                " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                [connection.ops.quote_name(db_table)],
            )
            columns = {name: Column(name, int(oid), base) for name, oid, base in cursor.fetchall()}
        _catalog[key] = columns
    return columns


def forget_table(db_table: str | None = None, **kwargs: Any) -> None:
    """Drop cached column types of a table, or of every table (connected to ``post_migrate``)."""
    for key in [k for k in _catalog if db_table is None or k[2] == db_table]:
        del _catalog[key]


def column_of(field: models.Field[Any, Any]) -> str:
    """The database column of a concrete field (typed as optional in the stubs)."""
    assert field.column is not None, f"{field!r} has no column"
    return field.column


def is_fast(field: models.Field[Any, Any]) -> bool:
    if isinstance(field, models.ForeignKey):
        return is_fast(field.target_field)
    if type(field) is models.JSONField:
        return field.encoder is None
    return type(field) in FAST_FIELD_TYPES


def slow_converter(field: models.Field[Any, Any], connection: BaseDatabaseWrapper) -> Converter:
    """Prepare a value exactly as ``Model.save()`` would."""
    prep = field.get_db_prep_save
    target_attname = field.target_field.attname if isinstance(field, models.ForeignKey) else None

    def convert(value: Any) -> Any:
        if value is None:
            return None
        if hasattr(value, "resolve_expression"):
            raise TypeError(
                f"{field.model.__name__}.{field.name}: bulk operations take plain values, not"
                f" expressions ({type(value).__name__}); use QuerySet.update() or bulk_update() for those."
            )
        if target_attname is not None and isinstance(value, models.Model):
            value = getattr(value, target_attname)
        return prep(value, connection)

    return convert


def binary_ok(connection: BaseDatabaseWrapper, oids: Sequence[int]) -> bool:
    """Whether psycopg can dump every column type in binary (enums and extension types may not)."""
    adapters = connection.connection.adapters
    for oid in oids:
        try:
            adapters.get_dumper_by_oid(oid, pq.Format.BINARY)
        except ProgrammingError:
            return False
    return True


def _compact_json_encoder() -> Callable[[Any, int], Sequence[str]] | None:
    """The C encoder that ``json.dumps(obj)`` uses with its default options, built once instead of
    on every call: ``"".join(encoder(obj, 0))`` is ``json.dumps(obj)``.

    ``None`` where that encoder is missing or does not give ``json.dumps``'s text. Without a
    circular-reference check: the caller retries a failing value with ``json.dumps``, which raises
    its own error.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:
        encoder: Callable[[Any, int], Sequence[str]] = make(
            None, json.JSONEncoder().default, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
        )
        probe = [1, -2.5, "é\n", {"k": None, "3": True, 4: [float("inf")]}, "x"]
        if "".join(encoder(probe, 0)) != json.dumps(probe):
            return None
    except Exception:  # another Python's private encoder signature: keep json.dumps
        return None
    return encoder


_json_encoder = _compact_json_encoder()


def compact_json(obj: Any) -> str:
    """``json.dumps(obj)``, about 4x faster (raises what the C encoder raises)."""
    assert _json_encoder is not None, "callers check json_encoder_available first"
    return "".join(_json_encoder(obj, 0))


json_encoder_available = _json_encoder is not None


class CompactJsonbDumper(JsonbBinaryDumper):
    """psycopg's binary jsonb dumper, writing the text of ``json.dumps`` about 4x faster."""

    def dump(self, obj: Any) -> Buffer | None:
        if not json_encoder_available or isinstance(obj, Json | Jsonb):  # a wrapper carries its own dumps
            return super().dump(obj)
        try:
            text = compact_json(obj)
        except Exception:
            return super().dump(obj)
        return b"\x01" + text.encode()


class EncodedJsonbDumper(CompactJsonbDumper):
    """``CompactJsonbDumper`` for a batch whose JSON values were encoded when it was read.

    Only used for such a batch, where a ``bytes`` value of a jsonb column can only be that
    encoding (``bytes`` is not JSON-serializable, so a batch holding one is never encoded).
    """

    def dump(self, obj: Any) -> Buffer | None:
        if type(obj) is bytes:
            return b"\x01" + obj
        return super().dump(obj)


def encode_json(value: Any) -> bytes:
    """The UTF-8 text of ``json.dumps(value)``; raises for what json.dumps refuses (bytes too)."""
    if not json_encoder_available:
        raise TypeError(f"{type(value).__name__} is not encoded ahead")
    return compact_json(value).encode()


def encode_json_column(values: Sequence[Any]) -> list[bytes | None]:
    """``encode_json`` of each value, None kept as None (SQL NULL, as Django stores it).

    Loops in C (``map``), as this runs once per JSON value that ``batch_create`` reads.
    """
    if _json_encoder is None:
        raise TypeError("JSON values are not encoded ahead without the C encoder")
    if any(map(is_, values, repeat(None))):
        return [None if value is None else encode_json(value) for value in values]
    return list(map(str.encode, map("".join, map(_json_encoder, values, repeat(0)))))


def encode_json_columns(rows: Sequence[Sequence[Any]], positions: Sequence[int]) -> list[tuple[Any, ...]]:
    """``rows`` (of one width, at least one value) with the values at ``positions`` encoded by
    ``encode_json_column``: transposed to columns and back, with loops in C (``zip``, ``map``)."""
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
    for position in positions:
        columns[position] = encode_json_column(columns[position])
    return list(zip(*columns, strict=True))


def decode_json(value: Any) -> Any:
    """What ``encode_json`` encoded, as a value that json.dumps turns into the same text."""
    return json.loads(value) if type(value) is bytes else value


def encoded_for_django(value: Any) -> Any:
    """A JSON value encoded as read, as Django would prepare the value: its text, as jsonb."""
    return Jsonb(value.decode(), dumps=str) if type(value) is bytes else value


def stock_json_dumper(connection: BaseDatabaseWrapper) -> bool:
    """Whether jsonb goes through psycopg's own dumper on this connection (or, before it connects,
    on new ones), so that ``CompactJsonbDumper`` and ``encode_json`` give what it would."""
    if not json_encoder_available:
        return False
    adapters = connection.connection.adapters if connection.connection is not None else psycopg.adapters
    return adapters.get_dumper_by_oid(JSONB_OID, pq.Format.BINARY) is JsonbBinaryDumper


def use_compact_json(cursor: psycopg.Cursor[Any], *, encoded: bool = False) -> None:
    """Dump jsonb columns of this cursor's COPY with ``CompactJsonbDumper``, unless the connection
    dumps JSON its own way (``psycopg.types.json.set_json_dumps``).

    ``encoded``: the batch's JSON values were encoded as ``json.dumps`` does (what Django's own
    ``save()`` sends, whatever the connection's setting) and go as they are.
    """
    adapters = cursor.adapters
    if encoded:
        adapters.register_dumper(None, EncodedJsonbDumper)
    elif json_encoder_available and adapters.get_dumper_by_oid(JSONB_OID, pq.Format.BINARY) is JsonbBinaryDumper:
        adapters.register_dumper(None, CompactJsonbDumper)


def copy_rows(
    connection: BaseDatabaseWrapper,
    table: str,
    columns: Sequence[str],
    oids: Sequence[int],
    chunks: Iterable[Iterable[Sequence[Any]]],
    *,
    binary: bool = True,
    encoded_json: bool = False,
) -> int:
    """COPY the rows of ``chunks`` into ``table``; returns the number of rows PostgreSQL reports."""
    qn = connection.ops.quote_name
    fmt = "BINARY" if binary else "TEXT"
    sql = f"COPY {qn(table)} ({', '.join(qn(c) for c in columns)}) FROM STDIN (FORMAT {fmt})"
    with connection.cursor() as wrapper, connection.wrap_database_errors:
        cursor = wrapper.cursor
        if binary and JSONB_OID in oids:
            use_compact_json(cursor, encoded=encoded_json)
        with cursor.copy(sql) as copy:
            if binary:
                copy.set_types(list(oids))
            write = copy.write_row
            for chunk in chunks:
                for row in chunk:
                    write(row)
        return int(cursor.rowcount)


def temp_table_name() -> str:
    return f"scaleops_bulk_{uuid.uuid4().hex[:16]}"


def create_temp_like(connection: BaseDatabaseWrapper, temp: str, table: str, columns: Sequence[str]) -> None:
    """A temporary table with exactly the types of ``table``'s ``columns``, dropped at commit at the latest."""
    qn = connection.ops.quote_name
    cols = ", ".join(qn(c) for c in columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMPORARY TABLE {qn(temp)} ON COMMIT DROP AS SELECT {cols} FROM {qn(table)} WITH NO DATA"
        )


def drop_temp(connection: BaseDatabaseWrapper, temp: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {connection.ops.quote_name(temp)}")


def is_database_default(value: Any) -> bool:
    return isinstance(value, DatabaseDefault)


def max_rows_per_statement(columns: int, limit: int = 65535) -> int:
    """Rows per statement so that bind parameters never exceed PostgreSQL's 65,535."""
    return max(1, limit // max(columns, 1))


# invalid_binary_representation: the server refused what a dumper produced for a value.
RETRY_PREPARED_SQLSTATES = frozenset({"22P03"})


def rejected_by_fast_road(exc: BaseException) -> bool:
    """A Python value psycopg would not dump as it is, as opposed to a row the database refused."""
    if isinstance(exc, DUMP_ERRORS):
        return True
    cause = exc if isinstance(exc, psycopg.Error) else exc.__cause__
    if isinstance(cause, psycopg.Error):
        # Client-side psycopg errors (a row of the wrong length, no dumper) carry no SQLSTATE.
        return cause.sqlstate is None or cause.sqlstate in RETRY_PREPARED_SQLSTATES
    return False


def copy_values(
    connection: BaseDatabaseWrapper,
    table: str,
    fields: Sequence[models.Field[Any, Any]],
    oids: Sequence[int],
    chunks: Callable[[], Iterable[ValueRows]],
    *,
    encoded: Sequence[int] = (),
) -> int:
    """COPY the value rows of ``chunks()`` (one value per field) into ``table``.

    First on the fast road, values as they are; if psycopg rejects one, again with every value
    prepared by Django (``chunks`` is called once per attempt). ``encoded``: positions of JSON
    values that are ``encode_json`` bytes (or None). Inside a transaction the fast attempt is
    wrapped in a savepoint; outside one each COPY is a transaction of its own, so a refused
    attempt leaves nothing behind either.
    """
    columns = [column_of(f) for f in fields]
    connection.ensure_connection()  # outside a transaction nothing may have connected it yet
    qn = connection.ops.quote_name
    # Through the execute-wrapper chain, as if Django's cursor had sent it: the query monitor
    # counts the COPY and the cache queues its invalidation (see django_scaleops/wrappers.py).
    statement = f"COPY {qn(table)} ({', '.join(qn(c) for c in columns)}) FROM STDIN"
    return run_through_chain(
        connection, None, statement, lambda: _copy_values(connection, table, columns, fields, oids, chunks, encoded)
    )


def _copy_values(
    connection: BaseDatabaseWrapper,
    table: str,
    columns: list[str],
    fields: Sequence[models.Field[Any, Any]],
    oids: Sequence[int],
    chunks: Callable[[], Iterable[ValueRows]],
    encoded: Sequence[int],
) -> int:
    binary = binary_ok(connection, oids)
    if binary:
        sid = connection.savepoint()  # transaction.savepoint() is deprecated in Django 6.1
        try:
            fast = _fast_values(connection, fields, oids, chunks())
            count = copy_rows(connection, table, columns, oids, fast, encoded_json=bool(encoded))
        except Exception as exc:
            if sid is not None:  # None only outside a transaction, where there is nothing to undo
                connection.savepoint_rollback(sid)
            if not rejected_by_fast_road(exc):
                raise
            # A value psycopg will not dump as it is: send the batch again, prepared by Django.
        else:
            if sid is not None:
                connection.savepoint_commit(sid)
            return count
    prepared = _prepared_values(connection, fields, oids, chunks(), binary=binary, encoded=encoded)
    return copy_rows(connection, table, columns, oids, prepared, binary=binary)


def _fast_values(
    connection: BaseDatabaseWrapper,
    fields: Sequence[models.Field[Any, Any]],
    oids: Sequence[int],
    chunks: Iterable[ValueRows],
) -> Iterable[ValueRows]:
    """Values as they are, but those of fields psycopg cannot take as they are, which Django
    prepares; the column types whose binary dumper would store a wrong value are checked a column
    at a time (a failing check sends the batch down the prepared road, which names the value)."""
    converters = [(i, slow_converter(f, connection)) for i, f in enumerate(fields) if not is_fast(f)]
    checks = [(i, oid) for i, oid in enumerate(oids) if oid in CHECKED_OIDS]
    return _converted(chunks, converters, checks)


def _prepared_values(
    connection: BaseDatabaseWrapper,
    fields: Sequence[models.Field[Any, Any]],
    oids: Sequence[int],
    chunks: Iterable[ValueRows],
    *,
    binary: bool,
    encoded: Sequence[int],
) -> Iterable[ValueRows]:
    """Every value prepared by Django, as ``save()`` prepares it; out-of-range values refused one
    by one, with the value and column named, where the binary dumper would wrap them around."""
    converters = [slow_converter(f, connection) for f in fields]
    for position in encoded:
        converters[position] = encoded_for_django
    if binary:
        guards = [range_guard(oid, column_of(f)) for f, oid in zip(fields, oids, strict=True)]
        converters = [c if g is None else _then(c, g) for c, g in zip(converters, guards, strict=True)]
    return _converted(chunks, list(enumerate(converters)), [])


def _converted(
    chunks: Iterable[ValueRows], converters: list[tuple[int, Converter]], checks: list[tuple[int, int]]
) -> Iterable[ValueRows]:
    if not converters and not checks:
        return chunks

    def convert(row: Sequence[Any]) -> list[Any]:
        values = list(row)
        for i, convert_value in converters:
            values[i] = convert_value(values[i])
        return values

    def converted() -> Iterator[ValueRows]:
        for rows in chunks:
            if converters:
                rows = list(map(convert, rows))
            for position, oid in checks:
                if not column_ok(oid, list(map(itemgetter(position), rows))):
                    raise ValueOutOfRange("a value of the batch is out of range or of the wrong type for its column.")
            yield rows

    return converted()
