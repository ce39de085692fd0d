"""The input side of ``batch_create``: each form of row (model instances, mappings, tuples with
``fields=``) has a small adapter, a ``RowForm``, and batches are read in one form each.

A batch of one form holds its rows normalised: mappings and tuples become tuples of values (JSON
values encoded, see below), instances stay as they are. At write time the form's
``read_values()`` turns a chunk of those rows into column values, fields left out filled in:
that is all the writer sees of the input. A batch whose rows are of several forms, or that
reading cannot vouch for (a row of the wrong width, an unknown key, a value ``json.dumps``
refuses), holds the rows as given; the writer sorts them by form and reports what is wrong.

Why JSON values are encoded as they are read: a row holding a list or a dict is tracked by
Python's garbage collector; one kept for a whole batch outlives two collections and reaches the
oldest generation, and thousands per batch set off full collections of the whole process (about
1 µs a row on the benchmark machine). Encoded as they are read, a batch's rows hold only strings,
numbers and bytes, which the collector stops tracking, and the caller's lists and dicts die young.
Read a column at a time with loops in C, this costs less than the collections it saves, with one
connection too (there it runs while the server waits): 300,000 dicts went 8.6% faster, tuples 5.8%.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from itertools import compress, islice, repeat
from operator import add, attrgetter, itemgetter
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models
from django.db.models.fields import NOT_PROVIDED, AutoFieldMixin
from django.db.models.fields.mixins import FieldCacheMixin

from django_scaleops.bulk.columns import column_of, decode_json, encode_json_columns, is_database_default, is_fast

if TYPE_CHECKING:
    Field = models.Field[Any, Any]

# Rows are read this many at a time: a chunk of tuples or dicts is checked and its JSON values
# encoded while the caller's row objects are still young. Fewer of them alive at a time means
# fewer survive a collection: with 256, the collector cost 0.62 µs a row of 300,000 dicts
# (workers=2), with 64 0.30 µs, and the call was 6% faster.
READ_CHUNK_ROWS = 64

ReadValues = Callable[[list[Any]], Sequence[Sequence[Any]]]

_state_of = attrgetter("_state")
_dict_of = attrgetter("__dict__")


def _as_they_are(chunk: list[Any]) -> list[Any]:
    return chunk


class RowForm:
    """How rows of one form become the values of ``fields`` (every column written, in order).

    ``encoded``: positions of the JSON values that reading encodes (``encode_json`` bytes in a
    batch of this form, None staying None).
    """

    fields: list[Field]
    columns: list[str]
    encoded: tuple[int, ...] = ()

    def normalise(self, rows: list[Any]) -> list[Any]:
        """The caller's rows of this form as a batch holds them (JSON values not encoded)."""
        return rows

    def restore(self, row: Any) -> Any:
        """A row of a batch as the caller gave it (JSON values decoded: equal, or giving the same
        text to ``json.dumps``)."""
        return row

    def read_values(self) -> ReadValues:
        """From a chunk of a batch's rows to their column values; called once per batch written."""
        raise NotImplementedError

    def before_write(self, rows: list[Any]) -> None:
        """Checks of a batch's rows that must pass before anything is sent."""

    def after_write(self, rows: list[Any], pks: list[Any] | None, alias: str) -> None:
        """What writing the batch (``pks``: the keys returned, if any) changes in its rows."""


class PositionalForm(RowForm):
    """Tuples with ``fields=``, or mappings with the same keys (``keys``, in the form's order): a
    batch holds tuples of the ``given`` fields' values; the fields left out are filled in when
    written."""

    def __init__(
        self, given: list[Field], fill: list[Field], *, keys: tuple[str, ...] | None, encoded: tuple[int, ...]
    ) -> None:
        self.keys = keys
        self.width = len(given)
        self.encoded = encoded
        # Fields left out: constant defaults once, auto_now(_add) stamps once per batch (so a
        # batch shares one "now"), callable defaults (uuid4, timezone.now...) once per row.
        constant = [f for f in fill if not needs_pre_save(f) and not callable(f.default)]
        self.stamped = [f for f in fill if needs_pre_save(f)]
        per_row = [f for f in fill if not needs_pre_save(f) and callable(f.default)]
        self.constants = tuple(f.get_default() for f in constant)
        self.calls = [f.get_default for f in per_row]
        self.fields = [*given, *constant, *self.stamped, *per_row]
        self.columns = [column_of(f) for f in self.fields]
        self.get: Callable[[Any], tuple[Any, ...]]
        if keys is None:
            self.get = tuple
        elif len(keys) == 1:  # itemgetter of one key gives the value, not a tuple
            only = keys[0]
            self.get = lambda row: (row[only],)
        elif keys:
            self.get = itemgetter(*keys)
        else:
            self.get = lambda row: ()

    def normalise(self, rows: list[Any]) -> list[Any]:
        # By name, not by position: a mapping with the same keys in another order reads the same.
        return list(map(self.get, rows))

    def restore(self, row: Any) -> Any:
        values = list(row)
        for position in self.encoded:
            values[position] = decode_json(values[position])
        return tuple(values) if self.keys is None else dict(zip(self.keys, values, strict=True))

    def read_values(self) -> ReadValues:
        if len(self.fields) == self.width:
            return _as_they_are
        scratch = SimpleNamespace()  # pre_save stamps "now" on it, as save() does on the instance
        suffix = (*self.constants, *(f.pre_save(scratch, True) for f in self.stamped))  # type: ignore[arg-type]
        calls = self.calls
        if calls:
            return lambda chunk: [(*row, *suffix, *(call() for call in calls)) for row in chunk]
        return lambda chunk: list(map(add, chunk, repeat(suffix)))  # tuple + suffix, looped in C


class InstanceForm(RowForm):
    """Model instances of one kind (key set or left to the database, ``db_default`` values used or
    not): a batch holds the instances; their values are read when written, after ``pre_save``."""

    def __init__(self, fields: list[Field], *, pk: Field, has_relations: bool, stock_relation_checks: bool) -> None:
        self.fields = fields
        self.columns = [column_of(f) for f in fields]
        self.pk_attname = pk.attname
        self.has_relations = has_relations
        self.stock_relation_checks = stock_relation_checks
        attnames = [f.attname for f in fields]
        # Field values live in the instance's __dict__ under their attnames: one itemgetter call
        # reads them all. A deferred field is missing there and is loaded through its descriptor.
        self.from_dict = itemgetter(*attnames)
        self.getter = attrgetter(*attnames)
        self.single = len(fields) == 1
        # auto_now / auto_now_add and custom pre_save hooks run as in save().
        self.presave = [f for f in fields if needs_pre_save(f)]

    def read_values(self) -> ReadValues:
        from_dict, getter, single, presave = self.from_dict, self.getter, self.single, self.presave

        def read(obj: Any) -> Sequence[Any]:
            for f in presave:
                f.pre_save(obj, True)
            try:
                values = from_dict(obj.__dict__)
            except KeyError:
                values = getter(obj)
            return (values,) if single else values

        if not presave:

            def read_chunk(chunk: list[Any]) -> Sequence[Sequence[Any]]:
                # The chunk's __dict__s in one loop in C; a deferred field (KeyError) is loaded
                # through its descriptor, row by row.
                try:
                    values = list(map(from_dict, map(vars, chunk)))
                except KeyError:
                    return list(map(read, chunk))
                return list(zip(values)) if single else values

            return read_chunk
        if not all(map(_stock_datetime_stamp, presave)):
            return lambda chunk: list(map(read, chunk))
        # What DateTimeField.pre_save does for auto_now(_add): each instance gets its own
        # timezone.now(); USE_TZ is read once per batch instead of once per row.
        stamped = [f.attname for f in presave]
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

        return lambda chunk: list(map(read_stamped, chunk))

    def before_write(self, rows: list[Any]) -> None:
        if not self.has_relations:
            return
        checked: Iterable[Any] = rows
        if self.stock_relation_checks:
            # Django's check only looks at related objects in the instance's fields cache (an
            # instance given sender_id=7 has none): skip the instances whose cache is empty or
            # was never made, picked by loops in C.
            caches = map(dict.get, map(_dict_of, map(_state_of, rows)), repeat("fields_cache"))
            checked = list(compress(rows, caches))
        for obj in checked:
            obj._prepare_related_fields_for_save(operation_name="batch_create")

    def after_write(self, rows: list[Any], pks: list[Any] | None, alias: str) -> None:
        # Returned keys map back to instances only when every row was inserted (no skipped conflicts).
        if pks is not None and len(pks) == len(rows):
            attname = self.pk_attname
            for obj, pk in zip(rows, pks, strict=True):
                if getattr(obj, attname) is None:
                    setattr(obj, attname, pk)
        # state.adding = False and state.db = alias on every instance, looped in C.
        states = list(map(_state_of, rows))
        deque(map(setattr, states, repeat("adding"), repeat(False)), maxlen=0)
        deque(map(setattr, states, repeat("db"), repeat(alias)), maxlen=0)


class RowForms:
    """The forms of one ``batch_create`` call: which form a row or a chunk of rows is in.

    ``encode_json``: JSON values of mappings and tuples are encoded as they are read (when the
    connection dumps JSON as ``json.dumps`` does).
    """

    def __init__(self, model: type[models.Model], fields: Sequence[str] | None, *, encode_json: bool) -> None:
        opts = model._meta
        self.model = model
        assert opts.pk is not None
        self.pk: Field = opts.pk
        self.concrete: list[Field] = list(opts.concrete_fields)
        self.by_name: dict[str, Field] = {f.name: f for f in self.concrete} | {f.attname: f for f in self.concrete}
        # AutoField and friends, or a db_default: the database assigns the key when it is None.
        self.auto_pk = AutoFieldMixin in type(self.pk).__mro__ or self.pk.db_default is not NOT_PROVIDED
        self.db_default_fields = [f for f in self.concrete if f.db_default is not NOT_PROVIDED]
        self.has_relations = any(f.is_relation for f in self.concrete)
        self.stock_relation_checks = _stock_relation_checks(model)
        self.pk_of = attrgetter(self.pk.attname)
        self.encode_json = encode_json
        self._keyed: dict[frozenset[Any], PositionalForm] = {}  # mappings, by their keys
        self._instance_forms: dict[tuple[bool, ...], InstanceForm] = {}
        self.tuples = self._positional([self.field(name) for name in fields], None) if fields is not None else None

    def field(self, name: str) -> Field:
        try:
            return self.by_name[name]
        except KeyError:
            raise ValueError(f"{self.model.__name__} has no concrete field {name!r}.") from None

    # -- reading: a chunk of rows of one form, normalised

    def recognise(self, chunk: list[Any]) -> Batch | None:
        """``chunk`` (not empty) as a batch of one form, or None if reading cannot vouch for it.

        Never raises: what is wrong with a row is reported when its batch is written. Checks go a
        column at a time with loops in C (``set``, ``map``): this runs over every row read.
        """
        types = set(map(type, chunk))
        if len(types) != 1:
            return None
        kind = types.pop()
        form: PositionalForm | None
        if issubclass(kind, models.Model):
            instances = self._instances(chunk) if issubclass(kind, self.model) else None
            return None if instances is None else Batch(chunk, instances)
        if kind is dict or issubclass(kind, Mapping):
            form = self._known_keys(chunk[0])
        elif kind is tuple or (issubclass(kind, Sequence) and not issubclass(kind, str | bytes)):
            form = self.tuples
        else:
            return None
        if form is None or set(map(len, chunk)) != {form.width}:
            return None
        try:
            rows = chunk if kind is tuple else form.normalise(chunk)  # KeyError: not the same keys
            if form.encoded:
                rows = encode_json_columns(rows, form.encoded)
        except Exception:  # a key missing, or a value json.dumps refuses
            return None
        return Batch(rows, form)

    def _known_keys(self, row: Mapping[Any, Any]) -> PositionalForm | None:
        keys = frozenset(row)
        form = self._keyed.get(keys)
        if form is None and all(name in self.by_name for name in keys):
            form = self._mapping_form(row, keys)
        return form

    def _instances(self, chunk: list[Any]) -> InstanceForm | None:
        if self.db_default_fields:
            keys = set(map(self._instance_key, chunk))
            return self._instance_form(keys.pop()) if len(keys) == 1 else None
        unset = list(map(self.pk_of, chunk)).count(None) if self.auto_pk else 0
        if 0 < unset < len(chunk):
            return None
        return self._instance_form((unset > 0,))

    # -- writing: the form of each row of a batch of several forms, with clear errors

    def of(self, row: Any) -> RowForm:
        if isinstance(row, models.Model):
            if not isinstance(row, self.model):
                raise TypeError(f"batch_create on {self.model.__name__} got a {type(row).__name__} instance.")
            return self._instance_form(self._instance_key(row))
        if isinstance(row, Mapping):
            keys = frozenset(row)
            return self._keyed.get(keys) or self._mapping_form(row, keys)
        if isinstance(row, Sequence) and not isinstance(row, str | bytes):
            if self.tuples is None:
                raise ValueError("batch_create with tuples needs fields=[...] naming the value of each position.")
            if len(row) != self.tuples.width:
                raise ValueError(f"a row has {len(row)} values but fields= names {self.tuples.width}.")
            return self.tuples
        raise TypeError(f"batch_create takes model instances, mappings or tuples, not {type(row).__name__}.")

    # -- the forms

    def _positional(self, given: list[Field], keys: tuple[str, ...] | None) -> PositionalForm:
        names = {f.attname for f in given}
        fill = [
            f
            for f in self.concrete
            if f.attname not in names
            and not (f is self.pk and self.auto_pk)
            and f.db_default is NOT_PROVIDED
            and not f.generated
        ]
        encoded = tuple(i for i, f in enumerate(given) if _fast_json(f)) if self.encode_json else ()
        return PositionalForm(given, fill, keys=keys, encoded=encoded)

    def _mapping_form(self, row: Mapping[Any, Any], keys: frozenset[Any]) -> PositionalForm:
        # setdefault: a worker thread may build it at the same time; the first one is kept.
        return self._keyed.setdefault(keys, self._positional([self.field(name) for name in row], tuple(row)))

    def _instance_key(self, row: models.Model) -> tuple[bool, ...]:
        """Whether the database assigns the key, and which ``db_default`` values it fills in."""
        return (
            row.pk is None and self.auto_pk,
            *(is_database_default(getattr(row, f.attname)) for f in self.db_default_fields),
        )

    def _instance_form(self, key: tuple[bool, ...]) -> InstanceForm:
        form = self._instance_forms.get(key)
        if form is None:
            skip_pk = key[0]
            skip = {f.attname for f, flag in zip(self.db_default_fields, key[1:], strict=True) if flag}
            fields = [
                f for f in self.concrete if not (skip_pk and f is self.pk) and f.attname not in skip and not f.generated
            ]
            form = self._instance_forms.setdefault(
                key,
                InstanceForm(
                    fields,
                    pk=self.pk,
                    has_relations=self.has_relations,
                    stock_relation_checks=self.stock_relation_checks,
                ),
            )
        return form


class RowsRaised(BaseException):
    """The caller's iterable raised while a streamed batch was being written.

    A BaseException so that no handler meant for a failed write (retry, bisection, failure
    report) takes it: the COPY is abandoned, the batch's transaction rolled back, and
    ``batch_create`` raises the iterable's own exception, as it would have raised it between batches.
    """

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class RowsQueriedDuringCopy(RuntimeError):
    """The caller's iterable used the connection while ``batch_create(stream=True)`` had it in COPY."""


class Batch(list[Any]):
    """The rows of one batch. ``form``: the form every row is in, which the rows are normalised
    to; None: rows of several forms (or that reading could not vouch for), as given. Slices
    (bisection) keep the form.

    ``feed``: set on a streamed batch while the rest of its rows are still to be read (see
    ``read_batches``); ``chunks`` reads them as the writer takes them.
    """

    __slots__ = ("feed", "form")

    def __init__(self, rows: Iterable[Any] = (), form: RowForm | None = None) -> None:
        super().__init__(rows)
        self.form = form
        self.feed: _Feed | None = None

    def __getitem__(self, index: Any) -> Any:
        found = super().__getitem__(index)
        return Batch(found, self.form) if isinstance(index, slice) else found

    def chunks(self, size: int, reading: Callable[[], AbstractContextManager[Any]]) -> Iterator[list[Any]]:
        """The rows in lists of up to ``size``; a streamed batch reads its next rows from the
        caller's iterable when the ones read so far are taken, so they are read while the server
        works on what was sent. ``reading()`` surrounds each read of the caller's iterable."""
        done = 0
        while True:
            while done < len(self):
                chunk = list.__getitem__(self, slice(done, done + size))
                done += len(chunk)
                yield chunk
            if self.feed is None or not self.feed.more(self, reading):
                self.feed = None
                return

    def read_all(self) -> None:
        """Read the rest of a streamed batch (before a retry, a bisection or a failure report)."""
        while self.feed is not None and self.feed.more(self, nullcontext):
            pass
        self.feed = None


class _Feed:
    """Where a streamed batch's further rows come from: the caller's iterator, up to the batch's size."""

    def __init__(self, iterator: Iterator[Any], size: int, recognise: Callable[[list[Any]], Batch | None]) -> None:
        self.iterator = iterator
        self.size = size
        self.recognise = recognise
        # A chunk read but not in the batch's form: the next batch begins with it.
        self.carried: list[Any] = []

    def more(self, batch: Batch, reading: Callable[[], AbstractContextManager[Any]]) -> bool:
        """Read the next chunk into ``batch`` (within ``reading()``); False when the batch is complete."""
        room = self.size - len(batch)
        if room <= 0 or self.carried:
            return False
        try:
            with reading():
                chunk = list(islice(self.iterator, min(room, READ_CHUNK_ROWS)))
        except Exception as exc:
            raise RowsRaised(exc) from exc
        if not chunk:
            return False
        part = self.recognise(chunk)
        if part is None or part.form is not batch.form:
            self.carried = chunk
            return False
        batch.extend(part)
        return True


def read_batches(
    rows: Iterable[Any], size: int, recognise: Callable[[list[Any]], Batch | None], *, stream: bool = False
) -> Iterator[Batch]:
    """Batches of up to ``size`` rows, read ``READ_CHUNK_ROWS`` at a time (a generator is never
    materialised). A batch is of one form while ``recognise`` finds each chunk in the first
    chunk's form; otherwise it holds its rows as given.

    ``stream``: a batch of one form is handed over after its first chunk and reads the rest while
    it is written (``Batch.chunks``), so that building the caller's rows overlaps the server's
    work; it ends early where a chunk is in another form, which begins the next batch. Only for a
    writer on the thread that reads (the iterable is the caller's).
    """
    iterator = iter(rows)
    carried: list[Any] = []
    while chunk := carried or list(islice(iterator, min(size, READ_CHUNK_ROWS))):
        carried = []
        batch = recognise(chunk)
        if stream and batch is not None:
            feed = batch.feed = _Feed(iterator, size, recognise)
            yield batch
            batch.read_all()  # what the writer did not take (another road than COPY)
            carried = feed.carried
            continue
        while batch is not None and len(batch) < size:
            chunk = list(islice(iterator, min(size - len(batch), READ_CHUNK_ROWS)))
            if not chunk:
                break
            part = recognise(chunk)
            if part is None or part.form is not batch.form:
                assert batch.form is not None
                chunk[:0] = map(batch.form.restore, batch)
                batch = None
            else:
                batch.extend(part)
        if batch is None:
            chunk.extend(islice(iterator, size - len(chunk)))
            batch = Batch(chunk)
        yield batch


def _stock_relation_checks(model: type[models.Model]) -> bool:
    """Whether ``_prepare_related_fields_for_save`` is Django's own and every relation field tells
    whether it is cached as Django's fields do: then only an instance holding a related object in
    ``_state.fields_cache`` has anything to check."""
    prepare = "_prepare_related_fields_for_save"  # private: not in the stubs
    if getattr(model, prepare, None) is not getattr(models.Model, prepare):
        return False
    opts = model._meta
    relations = [f for f in (*opts.concrete_fields, *opts.private_fields) if f.is_relation]
    return all(getattr(type(f), "is_cached", None) is FieldCacheMixin.is_cached for f in relations)


def _fast_json(field: Field) -> bool:
    """A JSON field whose values go to psycopg as json.dumps encodes them (no custom encoder)."""
    return isinstance(field, models.JSONField) and is_fast(field)


def _stock_datetime_stamp(field: Field) -> bool:
    """An auto_now(_add) field whose pre_save is DateTimeField's own (it only stores timezone.now())."""
    return type(field).pre_save is models.DateTimeField.pre_save and bool(
        getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)
    )


def needs_pre_save(field: Field) -> bool:
    if isinstance(field, models.DateField):  # DateTimeField and TimeField too
        return bool(getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False))
    return type(field).pre_save is not models.Field.pre_save
