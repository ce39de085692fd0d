"""``batch_create``: binary COPY when nothing must come back, ``INSERT ... RETURNING`` when it must."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import repeat
from operator import add, attrgetter, itemgetter
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.fields import NOT_PROVIDED, AutoFieldMixin
from django.db.transaction import TransactionManagementError

from django_scaleops.bulk.columns import (
    Converter,
    ReadChunk,
    column_of,
    copy_prepared,
    create_temp_like,
    drop_temp,
    each,
    is_database_default,
    is_fast,
    max_rows_per_statement,
    slow_converter,
    stock_json_dumper,
    table_columns,
    temp_table_name,
)
from django_scaleops.bulk.process import run_on_workers
from django_scaleops.bulk.reading import EncodedBatch, RowEncoder, read_batches, same_row
from django_scaleops.bulk.result import BatchResult
from django_scaleops.bulk.runner import BatchRunner, Outcome, ProgressCallback, positive_int, write_alias
from django_scaleops.conf import conf

if TYPE_CHECKING:
    Field = models.Field[Any, Any]
CONFLICT_ACTIONS = (None, "ignore", "update")


Read = Callable[[Any], Sequence[Any]]


class _Shape:
    """How rows of one form (instance, mapping keys, tuple) become column values.

    ``readers()`` is called once per batch and returns two readers: the fast one for the binary
    COPY, from a chunk of rows to their values (psycopg checks the row length there), and a checked
    one from a row to its values, with clear errors, for the Django-prepared road.
    """

    def __init__(self, fields: list[Field], readers: Callable[[], tuple[ReadChunk, Read]], *, instances: bool) -> None:
        self.fields = fields
        self.columns = [column_of(f) for f in fields]
        self.readers = readers
        self.instances = instances


class Inserter:
    """Writes one batch of rows; built once per ``batch_create`` call."""

    def __init__(
        self,
        model: type[models.Model],
        connection: BaseDatabaseWrapper,
        *,
        fields: Sequence[str] | None,
        returning: bool,
        on_conflict: str | None,
        conflict_fields: Sequence[str] | None,
        update_fields: Sequence[str] | None,
    ) -> None:
        opts = model._meta
        if any(parent._meta.concrete_model is not opts.concrete_model for parent in opts.all_parents):
            raise ValueError("batch_create cannot insert a multi-table inherited model (its rows span tables).")
        self.model = model
        self.connection = connection
        self.table = opts.db_table
        self.qn = connection.ops.quote_name
        assert opts.pk is not None
        self.pk: Field = opts.pk
        self.concrete: list[Field] = [f for f in opts.concrete_fields]
        self.by_name: dict[str, Field] = {f.name: f for f in self.concrete} | {f.attname: f for f in self.concrete}
        # AutoField and friends, or a db_default: the database assigns the key when it is None.
        self.auto_pk = AutoFieldMixin in type(self.pk).__mro__ or self.pk.db_default is not NOT_PROVIDED
        self.db_default_fields = [f for f in self.concrete if f.db_default is not NOT_PROVIDED]
        self.has_relations = any(f.is_relation for f in self.concrete)
        self.fields_arg = [self._field(name) for name in fields] if fields is not None else None
        self.returning = returning
        self.on_conflict = on_conflict
        self.conflict_fields = [self._field(n) for n in conflict_fields or ()]
        self.update_fields = [self._field(n) for n in update_fields] if update_fields is not None else None
        if on_conflict == "update" and not self.conflict_fields:
            raise ValueError("on_conflict='update' needs conflict_fields: the unique columns that identify a row.")
        self._shapes: dict[Any, _Shape] = {}
        self._slow: dict[str, Converter] = {}
        self._encoders: dict[Any, RowEncoder | None] = {}

    def _field(self, name: str) -> Field:
        try:
            return self.by_name[name]
        except KeyError:
            raise ValueError(f"{self.model.__name__} has no concrete field {name!r}.") from None

    # -- reading

    def read_batches(self, rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
        """Batches of up to ``size`` rows, JSON values of tuples and dicts encoded as they are read."""
        return read_batches(rows, size, self._encoder_for)

    def _encoder_for(self, row: Any) -> RowEncoder | None:
        if self.returning or self.on_conflict or not stock_json_dumper(self.connection):
            # INSERT statements take Django-prepared values, only COPY takes the encoded text; and
            # JSON dumped the connection's own way (set_json_dumps) is dumped when written.
            return None
        if type(row) is tuple and self.fields_arg is not None:
            key: Any = ("seq",)
            if key not in self._encoders:
                encoded = tuple(i for i, f in enumerate(self.fields_arg) if _fast_json(f))
                width = len(self.fields_arg)
                self._encoders[key] = RowEncoder(None, width, encoded) if encoded else None
            return self._encoders[key]
        if type(row) is dict and row:
            key = tuple(row)
            if key not in self._encoders:
                fields = [self.by_name.get(name) for name in key]
                encoded = tuple(i for i, f in enumerate(fields) if f is not None and _fast_json(f))
                usable = encoded and None not in fields  # an unknown key is reported by the usual road
                self._encoders[key] = RowEncoder(key, len(key), encoded) if usable else None
            return self._encoders[key]
        return None

    # -- shapes

    def _filled(self, given: list[Field]) -> list[Field]:
        """Fields to fill from Python defaults: not given, not assigned by the database."""
        names = {f.attname for f in given}
        return [
            f
            for f in self.concrete
            if f.attname not in names
            and not (f is self.pk and self.auto_pk)
            and f.db_default is NOT_PROVIDED
            and not f.generated
        ]

    def _shape_for(self, row: Any) -> tuple[Any, _Shape]:
        if isinstance(row, models.Model):
            if not isinstance(row, self.model):
                raise TypeError(f"batch_create on {self.model.__name__} got a {type(row).__name__} instance.")
            key: Any = (
                "obj",
                row.pk is None and self.auto_pk,
                *(is_database_default(getattr(row, f.attname)) for f in self.db_default_fields),
            )
            return key, self._shapes.get(key) or self._instance_shape(key, row)
        if isinstance(row, Mapping):
            key = ("map", *row)
            return key, self._shapes.get(key) or self._mapping_shape(key, row)
        if isinstance(row, Sequence) and not isinstance(row, str | bytes):
            if self.fields_arg is None:
                raise ValueError("batch_create with tuples needs fields=[...] naming the value of each position.")
            key = ("seq",)
            return key, self._shapes.get(key) or self._sequence_shape(key)
        raise TypeError(f"batch_create takes model instances, mappings or tuples, not {type(row).__name__}.")

    def _instance_shape(self, key: Any, row: models.Model) -> _Shape:
        skip_pk = bool(key[1])
        skip = {f.attname for f, flag in zip(self.db_default_fields, key[2:], strict=True) if flag}
        fields = [
            f for f in self.concrete if not (skip_pk and f is self.pk) and f.attname not in skip and not f.generated
        ]
        attnames = [f.attname for f in fields]
        # Field values live in the instance's __dict__ under their attnames: one itemgetter call
        # reads them all. A deferred field is missing there and is loaded through its descriptor.
        from_dict = itemgetter(*attnames)
        getter = attrgetter(*attnames)
        # auto_now / auto_now_add and custom pre_save hooks run as in save().
        presave = [f for f in fields if _needs_pre_save(f)]
        single = len(fields) == 1

        def read(obj: Any) -> Sequence[Any]:
            for f in presave:
                f.pre_save(obj, True)
            try:
                values = from_dict(obj.__dict__)
            except KeyError:
                values = getter(obj)
            return (values,) if single else values

        if not presave or not all(_stock_datetime_stamp(f) for f in presave):
            shape = self._shapes[key] = _Shape(fields, lambda: (each(read), read), instances=True)
            return shape
        stamped = [f.attname for f in presave]

        def readers() -> tuple[ReadChunk, Read]:
            # What DateTimeField.pre_save does for auto_now(_add): each instance gets its own
            # timezone.now(); USE_TZ is read once per batch instead of once per row.
            tz = dt.UTC if settings.USE_TZ else None
            now = dt.datetime.now

            def read_stamped(obj: Any) -> Sequence[Any]:
                for attname in stamped:
                    setattr(obj, attname, now(tz))
                try:
                    values = from_dict(obj.__dict__)
                except KeyError:
                    values = getter(obj)
                return (values,) if single else values

            return each(read_stamped), read_stamped

        shape = self._shapes[key] = _Shape(fields, readers, instances=True)
        return shape

    def _mapping_shape(self, key: Any, row: Mapping[str, Any]) -> _Shape:
        given = [self._field(name) for name in row]
        # By name, not by position: a row with the same keys in another order reads the same.
        if len(given) > 1:
            return self._positional_shape(key, given, itemgetter(*row), gives_tuples=True)
        only = next(iter(row))  # itemgetter of one key gives the value, not a tuple
        return self._positional_shape(key, given, lambda row: (row[only],), gives_tuples=True)

    def _values_shape(self, keys: tuple[str, ...] | None) -> _Shape:
        """The shape of an ``EncodedBatch``: tuples of values, of ``fields=`` (``keys`` None) or
        of the dicts' ``keys`` in that order."""
        key = ("values", keys)
        shape = self._shapes.get(key)
        if shape is None:
            assert keys is not None or self.fields_arg is not None
            given = [self._field(name) for name in keys] if keys is not None else list(self.fields_arg or ())
            shape = self._positional_shape(key, given, same_row, gives_tuples=True)
        return shape

    def _sequence_shape(self, key: Any) -> _Shape:
        assert self.fields_arg is not None
        width = len(self.fields_arg)

        def checked(row: Sequence[Any]) -> Sequence[Any]:
            if len(row) != width:
                raise ValueError(f"a row has {len(row)} values but fields= names {width}.")
            return row

        # The caller's rows may be lists or other sequences: not read as tuples.
        return self._positional_shape(key, list(self.fields_arg), same_row, checked=checked, gives_tuples=False)

    def _positional_shape(
        self, key: Any, given: list[Field], values: Read, *, checked: Read | None = None, gives_tuples: bool
    ) -> _Shape:
        """Rows whose ``values(row)`` are the values of ``given`` (a tuple, when ``gives_tuples``),
        followed by what fills the fields left out."""
        checked = checked or values
        fill = self._filled(given)
        # Fields left out: constant defaults once, auto_now(_add) stamps once per batch (so a
        # batch shares one "now"), callable defaults (uuid4, timezone.now...) once per row.
        constant = [f for f in fill if not _needs_pre_save(f) and not callable(f.default)]
        stamped = [f for f in fill if _needs_pre_save(f)]
        per_row = [f for f in fill if not _needs_pre_save(f) and callable(f.default)]
        constant_values = tuple(f.get_default() for f in constant)
        calls = [f.get_default for f in per_row]
        scratch = SimpleNamespace()  # pre_save stamps "now" on it, as save() does on the instance
        # Rows that are their values need no reading: the chunk goes as it is.
        read_values: ReadChunk = same_row if values is same_row else each(values)

        def readers() -> tuple[ReadChunk, Read]:
            suffix = (*constant_values, *(f.pre_save(scratch, True) for f in stamped))  # type: ignore[arg-type]
            if not fill:
                return read_values, checked
            if calls:
                return (
                    each(lambda row: (*values(row), *suffix, *(call() for call in calls))),
                    lambda row: (*checked(row), *suffix, *(call() for call in calls)),
                )
            if gives_tuples:  # tuple + suffix, looped in C: no Python call per row
                return (
                    lambda chunk: list(map(add, read_values(chunk), repeat(suffix))),
                    lambda row: (*checked(row), *suffix),
                )
            return each(lambda row: (*values(row), *suffix)), lambda row: (*checked(row), *suffix)

        shape = self._shapes[key] = _Shape([*given, *constant, *stamped, *per_row], readers, instances=False)
        return shape

    def _slow_for(self, shape: _Shape) -> list[Converter]:
        return [
            self._slow.get(f.attname) or self._slow.setdefault(f.attname, slow_converter(f, self.connection))
            for f in shape.fields
        ]

    # -- writing

    def write(self, rows: list[Any]) -> Outcome:
        if type(rows) is EncodedBatch:
            shape = self._values_shape(rows.keys)
            return Outcome(self._copy(self.table, shape, rows, encoded=rows.encoded))
        key, shape = self._shape_for(rows[0])
        if key == ("seq",):  # tuples all share one shape: no per-row grouping
            return self._write_group(shape, rows)
        if shape.instances and self._same_instance_shape(rows, key):
            return self._write_group(shape, rows)
        if key[0] == "map" and self._same_keys(rows):
            return self._write_group(shape, rows)
        groups: dict[Any, list[Any]] = {}
        for row in rows:
            key, _ = self._shape_for(row)
            groups.setdefault(key, []).append(row)
        total = Outcome(pks=[] if self.returning else None)
        # One statement per group: together all or nothing, also outside the runner's transaction.
        with transaction.atomic(using=self.connection.alias, savepoint=False):
            for key, group in groups.items():
                total = total + self._write_group(self._shapes[key], group)
        return total

    @staticmethod
    def _same_keys(rows: list[Any]) -> bool:
        """Whether every row is a mapping with the first row's keys (in any order).

        One comparison of key sets per row instead of a shape key built and looked up per row.
        """
        first = rows[0].keys()
        # Plain dicts first: an exact type test costs half of isinstance() against the Mapping ABC.
        if all(type(row) is dict and row.keys() == first for row in rows):
            return True
        width = len(first)
        return all(isinstance(row, Mapping) and len(row) == width and row.keys() == first for row in rows)

    def _same_instance_shape(self, rows: list[Any], key: Any) -> bool:
        """Whether every row is an instance of the first row's class with its shape ``key``.

        The common batch (one class, keys all unset or all set, no ``db_default`` field) is
        recognised with one cheap pass instead of a shape lookup per row.
        """
        if self.db_default_fields:
            return False
        cls = type(rows[0])
        if not all(type(row) is cls for row in rows):
            return False
        if not self.auto_pk:
            return True
        pk_of = attrgetter(self.pk.attname)
        unset = bool(key[1])
        return all((pk_of(row) is None) is unset for row in rows)

    def _write_group(self, shape: _Shape, rows: list[Any]) -> Outcome:
        if shape.instances and self.has_relations:
            for obj in rows:
                obj._prepare_related_fields_for_save(operation_name="batch_create")
        if self.returning or self.on_conflict:
            if len(rows) > conf.SCALEOPS_BULK_TEMP_TABLE_ROWS:
                outcome = self._via_temp_table(shape, rows)
            else:
                outcome = self._via_values(shape, rows)
        else:
            outcome = Outcome(self._copy(self.table, shape, rows))
        if shape.instances:
            self._mark_saved(rows, outcome)
        return outcome

    def _copy(self, table: str, shape: _Shape, rows: list[Any], *, encoded: tuple[int, ...] = ()) -> int:
        catalog = table_columns(self.connection, self.table)
        oids = [catalog[c].oid for c in shape.columns]
        fast, checked = shape.readers()
        return copy_prepared(
            self.connection, table, shape.fields, oids, rows, checked, fast_read=fast, encoded_json=encoded
        )

    def _returning_sql(self) -> str:
        return f" RETURNING {self.qn(column_of(self.pk))}" if self.returning else ""

    def _conflict_sql(self, shape: _Shape) -> str:
        qn = self.qn
        if self.on_conflict is None:
            return ""
        target = f"({', '.join(qn(column_of(f)) for f in self.conflict_fields)}) " if self.conflict_fields else ""
        if self.on_conflict == "ignore":
            return f" ON CONFLICT {target}DO NOTHING"
        keys = {f.attname for f in self.conflict_fields} | {self.pk.attname}
        if self.update_fields is not None:
            updates = self.update_fields
        else:
            updates = [f for f in shape.fields if f.attname not in keys]
        if not updates:
            raise ValueError("on_conflict='update' has no column to update: pass update_fields=[...].")
        sets = ", ".join(f"{qn(column_of(f))} = EXCLUDED.{qn(column_of(f))}" for f in updates)
        return f" ON CONFLICT {target}DO UPDATE SET {sets}"

    def _via_values(self, shape: _Shape, rows: list[Any]) -> Outcome:
        qn = self.qn
        slow = self._slow_for(shape)
        _, read = shape.readers()
        width = len(shape.columns)
        head = f"INSERT INTO {qn(self.table)} ({', '.join(qn(c) for c in shape.columns)}) VALUES "
        tail = self._conflict_sql(shape) + self._returning_sql()
        placeholder = "(" + ", ".join(["%s"] * width) + ")"
        outcome = Outcome(pks=[] if self.returning else None)
        step = max_rows_per_statement(width)
        with self.connection.cursor() as cursor:
            for begin in range(0, len(rows), step):
                chunk = rows[begin : begin + step]
                params = [convert(v) for row in chunk for convert, v in zip(slow, read(row), strict=True)]
                cursor.execute(head + ", ".join([placeholder] * len(chunk)) + tail, params)
                if self.returning:
                    assert outcome.pks is not None
                    outcome.pks.extend(pk for (pk,) in cursor.fetchall())
                outcome.rows += cursor.rowcount
        return outcome

    def _via_temp_table(self, shape: _Shape, rows: list[Any]) -> Outcome:
        qn = self.qn
        temp = temp_table_name()
        create_temp_like(self.connection, temp, self.table, shape.columns)
        self._copy(temp, shape, rows)
        cols = ", ".join(qn(c) for c in shape.columns)
        sql = (
            f"INSERT INTO {qn(self.table)} ({cols}) SELECT {cols} FROM {qn(temp)}"
            + self._conflict_sql(shape)
            + self._returning_sql()
        )
        outcome = Outcome(pks=[] if self.returning else None)
        with self.connection.cursor() as cursor:
            cursor.execute(sql)
            if self.returning:
                assert outcome.pks is not None
                outcome.pks.extend(pk for (pk,) in cursor.fetchall())
            outcome.rows = cursor.rowcount
        drop_temp(self.connection, temp)
        return outcome

    def _mark_saved(self, rows: list[Any], outcome: Outcome) -> None:
        alias = self.connection.alias
        # Returned keys map back to instances only when every row was inserted (no skipped conflicts).
        pks = outcome.pks if outcome.pks is not None and len(outcome.pks) == len(rows) else None
        if pks is not None:
            attname = self.pk.attname
            for obj, pk in zip(rows, pks, strict=True):
                if getattr(obj, attname) is None:
                    setattr(obj, attname, pk)
        for obj in rows:
            state = obj._state
            state.adding = False
            state.db = alias


def _fast_json(field: Field) -> bool:
    """A JSON field whose values go to psycopg as json.dumps encodes them (no custom encoder)."""
    return isinstance(field, models.JSONField) and is_fast(field)


def _stock_datetime_stamp(field: Field) -> bool:
    """An auto_now(_add) field whose pre_save is DateTimeField's own (it only stores timezone.now())."""
    return type(field).pre_save is models.DateTimeField.pre_save and bool(
        getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)
    )


def _needs_pre_save(field: Field) -> bool:
    if isinstance(field, models.DateField):  # DateTimeField and TimeField too
        return bool(getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False))
    return type(field).pre_save is not models.Field.pre_save


def batch_create(
    queryset: models.QuerySet[Any],
    rows: Iterable[Any],
    *,
    fields: Sequence[str] | None = None,
    batch_size: int | None = None,
    returning: bool = False,
    on_conflict: str | None = None,
    conflict_fields: Sequence[str] | None = None,
    update_fields: Sequence[str] | None = None,
    atomic: bool = False,
    isolation_level: object = None,
    continue_on_error: bool = False,
    bisect: bool = True,
    max_retries: int | None = None,
    progress: ProgressCallback | None = None,
    workers: int = 1,
) -> BatchResult:
    """Insert rows in batches; see ``BulkQuerySet.batch_create``."""
    if on_conflict not in CONFLICT_ACTIONS:
        raise ValueError(f"on_conflict must be None, 'ignore' or 'update', not {on_conflict!r}.")
    model = queryset.model
    using = write_alias(queryset)
    size = positive_int("batch_size", conf.SCALEOPS_BULK_CREATE_BATCH_SIZE if batch_size is None else batch_size)
    workers = positive_int("workers", workers)

    def make_inserter() -> Inserter:
        return Inserter(
            model,
            connections[using],  # the calling thread's connection: a worker builds its own
            fields=fields,
            returning=returning,
            on_conflict=on_conflict,
            conflict_fields=conflict_fields,
            update_fields=update_fields,
        )

    def make_runner() -> BatchRunner[Any]:
        return BatchRunner(
            model=model,
            using=using,
            operation="create",
            atomic=atomic,
            isolation_level=isolation_level,
            continue_on_error=continue_on_error,
            bisect=bisect,
            max_retries=max_retries,
            progress=progress,
            collect_pks=returning,
            # A batch is one COPY; INSERT ... RETURNING and the conflict roads may take several statements.
            atomic_work=not returning and not on_conflict,
        )

    inserter = make_inserter()  # validates the arguments before any row is read
    if workers == 1:
        return make_runner().run(inserter.read_batches(rows, size), inserter.write)
    if atomic:
        raise ValueError("atomic=True needs one transaction, so one connection: it cannot run on workers.")
    if connections[using].in_atomic_block:
        raise TransactionManagementError(
            "batch_create(workers=...) commits on the workers' own connections, outside your transaction:"
            " call it outside atomic(), or use workers=1."
        )
    # One batch waiting per worker: each worker COPYs while the calling thread reads the next batch
    # from the iterable (on its own connection, never in COPY), and memory holds about
    # 2 * workers batches.
    return run_on_workers(
        inserter.read_batches(rows, size),
        lambda: make_inserter().write,
        make_runner,
        operation="create",
        workers=workers,
        queue_depth=workers,
        progress=progress,
    )
