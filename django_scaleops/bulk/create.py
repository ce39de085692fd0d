"""``batch_create``: binary COPY when nothing must come back, ``INSERT ... RETURNING`` when it must.

One pipeline for every input form: ``reading`` turns the caller's rows into batches of one form
each (its ``RowForm`` gives the column values of a chunk of rows), and ``Inserter.write`` sends a
batch by COPY, or through ``INSERT ... VALUES`` or a COPY'd temporary table when keys must come
back or conflicts be handled.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from django.db import connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.transaction import TransactionManagementError

from django_scaleops.bulk.columns import (
    CHECK_CHUNK_ROWS,
    chunks_of,
    column_of,
    copy_values,
    create_temp_like,
    drop_temp,
    encoded_for_django,
    max_rows_per_statement,
    slow_converter,
    stock_json_dumper,
    table_columns,
    temp_table_name,
)
from django_scaleops.bulk.process import run_on_workers
from django_scaleops.bulk.reading import Batch, RowForm, RowForms, RowsQueriedDuringCopy, RowsRaised, read_batches
from django_scaleops.bulk.result import BatchResult
from django_scaleops.bulk.runner import BatchRunner, Outcome, ProgressCallback, positive_int, write_alias
from django_scaleops.conf import conf

if TYPE_CHECKING:
    Field = models.Field[Any, Any]
CONFLICT_ACTIONS = (None, "ignore", "update")


class Inserter:
    """Reads and writes the batches of one ``batch_create`` call.

    Built on the calling thread; ``write`` runs on any thread, on that thread's connection.
    """

    def __init__(
        self,
        model: type[models.Model],
        using: str,
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
        self.using = using
        self.table = opts.db_table
        # JSON values are encoded as read only where psycopg would dump them as json.dumps does:
        # a connection with its own set_json_dumps gets them as they are.
        self.forms = RowForms(model, fields, encode_json=stock_json_dumper(connections[using]))
        self.pk = self.forms.pk
        self.returning = returning
        self.on_conflict = on_conflict
        self.conflict_fields = [self.forms.field(n) for n in conflict_fields or ()]
        self.update_fields = [self.forms.field(n) for n in update_fields] if update_fields is not None else None
        if on_conflict == "update" and not self.conflict_fields:
            raise ValueError("on_conflict='update' needs conflict_fields: the unique columns that identify a row.")

    def read_batches(self, rows: Iterable[Any], size: int, *, stream: bool = False) -> Iterator[Batch]:
        return read_batches(rows, size, self.forms.recognise, stream=stream)

    def write(self, batch: list[Any]) -> Outcome:
        """Write one batch (or, when bisecting, part of one): rows as given, or a ``Batch``."""
        form = batch.form if isinstance(batch, Batch) else None
        if form is not None:
            return self._write(form, batch, form.encoded)
        # Rows of several forms, or that reading could not vouch for: each form's rows in one
        # statement, together all or nothing (also outside the runner's transaction). A row in no
        # form raises here, for the runner to report (or bisect down to).
        groups: dict[RowForm, list[Any]] = {}
        for row in batch:
            groups.setdefault(self.forms.of(row), []).append(row)
        if len(groups) == 1:
            ((form, rows),) = groups.items()
            return self._write(form, form.normalise(rows), ())
        total = Outcome(pks=[] if self.returning else None)
        with transaction.atomic(using=self.using, savepoint=False):
            for form, rows in groups.items():
                total = total + self._write(form, form.normalise(rows), ())
        return total

    def _write(self, form: RowForm, rows: list[Any], encoded: tuple[int, ...]) -> Outcome:
        connection = connections[self.using]
        copy = not self.returning and not self.on_conflict
        streamed = False
        if isinstance(rows, Batch) and rows.feed is not None:
            if copy:
                streamed = True
            else:
                rows.read_all()  # only a plain COPY sends rows as they are read
        if not streamed:
            form.before_write(rows)  # a streamed batch checks each chunk as it is read (_copy)
        try:
            if copy:
                outcome = Outcome(self._copy(connection, self.table, form, rows, encoded))
            elif len(rows) > conf.SCALEOPS_BULK_TEMP_TABLE_ROWS:
                outcome = self._via_temp_table(connection, form, rows, encoded)
            else:
                outcome = self._via_values(connection, form, rows, encoded)
        except Exception:
            if isinstance(rows, Batch):
                rows.read_all()  # the whole batch, for a retry, a bisection or the failure report
            raise
        form.after_write(rows, outcome.pks, connection.alias)
        return outcome

    def _copy(
        self, connection: BaseDatabaseWrapper, table: str, form: RowForm, rows: list[Any], encoded: tuple[int, ...]
    ) -> int:
        catalog = table_columns(connection, self.table)
        oids = [catalog[c].oid for c in form.columns]
        read = form.read_values()  # once: both attempts of copy_values send the same stamps

        def chunks() -> Iterator[Sequence[Sequence[Any]]]:
            if isinstance(rows, Batch) and rows.feed is not None:
                # Streamed: the rest of the batch is read while the server works on what was sent.
                for chunk in rows.chunks(CHECK_CHUNK_ROWS, lambda: _no_queries(connection)):
                    form.before_write(chunk)
                    yield read(chunk)
            else:
                yield from map(read, chunks_of(rows))

        return copy_values(connection, table, form.fields, oids, chunks, encoded=encoded)

    def _returning_sql(self, connection: BaseDatabaseWrapper) -> str:
        return f" RETURNING {connection.ops.quote_name(column_of(self.pk))}" if self.returning else ""

    def _conflict_sql(self, connection: BaseDatabaseWrapper, form: RowForm) -> str:
        qn = connection.ops.quote_name
        if self.on_conflict is None:
            return ""
        target = f"({', '.join(qn(column_of(f)) for f in self.conflict_fields)}) " if self.conflict_fields else ""
        if self.on_conflict == "ignore":
            return f" ON CONFLICT {target}DO NOTHING"
        keys = {f.attname for f in self.conflict_fields} | {self.pk.attname}
        if self.update_fields is not None:
            updates = self.update_fields
        else:
            updates = [f for f in form.fields if f.attname not in keys]
        if not updates:
            raise ValueError("on_conflict='update' has no column to update: pass update_fields=[...].")
        sets = ", ".join(f"{qn(column_of(f))} = EXCLUDED.{qn(column_of(f))}" for f in updates)
        return f" ON CONFLICT {target}DO UPDATE SET {sets}"

    def _via_values(
        self, connection: BaseDatabaseWrapper, form: RowForm, rows: list[Any], encoded: tuple[int, ...]
    ) -> Outcome:
        qn = connection.ops.quote_name
        # Values prepared by Django, as save() prepares them; JSON encoded as read goes as that text.
        convert = [slow_converter(f, connection) for f in form.fields]
        for position in encoded:
            convert[position] = encoded_for_django
        values = form.read_values()(rows)
        width = len(form.columns)
        head = f"INSERT INTO {qn(self.table)} ({', '.join(qn(c) for c in form.columns)}) VALUES "
        tail = self._conflict_sql(connection, form) + self._returning_sql(connection)
        placeholder = "(" + ", ".join(["%s"] * width) + ")"
        outcome = Outcome(pks=[] if self.returning else None)
        step = max_rows_per_statement(width)
        with connection.cursor() as cursor:
            for begin in range(0, len(values), step):
                chunk = values[begin : begin + step]
                params = [c(v) for row in chunk for c, v in zip(convert, row, strict=True)]
                cursor.execute(head + ", ".join([placeholder] * len(chunk)) + tail, params)
                if outcome.pks is not None:
                    outcome.pks.extend(pk for (pk,) in cursor.fetchall())
                outcome.rows += cursor.rowcount
        return outcome

    def _via_temp_table(
        self, connection: BaseDatabaseWrapper, form: RowForm, rows: list[Any], encoded: tuple[int, ...]
    ) -> Outcome:
        qn = connection.ops.quote_name
        temp = temp_table_name()
        create_temp_like(connection, temp, self.table, form.columns)
        self._copy(connection, temp, form, rows, encoded)
        cols = ", ".join(qn(c) for c in form.columns)
        sql = (
            f"INSERT INTO {qn(self.table)} ({cols}) SELECT {cols} FROM {qn(temp)}"
            + self._conflict_sql(connection, form)
            + self._returning_sql(connection)
        )
        outcome = Outcome(pks=[] if self.returning else None)
        with connection.cursor() as cursor:
            cursor.execute(sql)
            if outcome.pks is not None:
                outcome.pks.extend(pk for (pk,) in cursor.fetchall())
            outcome.rows = cursor.rowcount
        drop_temp(connection, temp)
        return outcome


class _RefusingLock:
    """Stands in for a psycopg connection's lock while the caller's iterable runs in a streamed COPY."""

    def __init__(self, alias: str) -> None:
        self.alias = alias

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        raise RowsQueriedDuringCopy(
            f"batch_create(stream=True) reads the rows while connection {self.alias!r} is in COPY, and the"
            " rows' iterable used that connection (a query, or a queryset iterator's next rows): read what"
            " it needs before, or pass stream=False (or workers=N, which reads the rows on this connection"
            " while others write)."
        )

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        return None


@contextmanager
def _no_queries(connection: BaseDatabaseWrapper) -> Iterator[None]:
    """While the caller's iterable runs inside a streamed COPY, any round trip it makes on this
    connection fails at once instead of waiting forever: the COPY holds the psycopg connection's
    lock, which every query and fetch takes (Django's execute wrappers would miss a server-side
    cursor's next fetch). The COPY's own ``with lock`` keeps the real lock it entered."""
    raw = connection.connection
    lock = raw.lock
    raw.lock = _RefusingLock(connection.alias)
    try:
        yield
    finally:
        raw.lock = lock


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
    stream: bool = False,
) -> BatchResult:
    """Insert rows in batches; see ``BulkQuerySet.batch_create``."""
    if on_conflict not in CONFLICT_ACTIONS:
        raise ValueError(f"on_conflict must be None, 'ignore' or 'update', not {on_conflict!r}.")
    if not isinstance(stream, bool):
        raise TypeError(f"stream must be True or False, not {stream!r}.")
    model = queryset.model
    using = write_alias(queryset)
    size = positive_int("batch_size", conf.SCALEOPS_BULK_CREATE_BATCH_SIZE if batch_size is None else batch_size)
    workers = positive_int("workers", workers)
    if stream and workers > 1:
        raise ValueError(
            "stream=True reads the rows while this connection's COPY sends them; workers= reads them while"
            " other connections write: choose one."
        )
    inserter = Inserter(  # validates the arguments before any row is read
        model,
        using,
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

    if stream:
        # Each COPY reads the caller's rows as it sends them.
        try:
            return make_runner().run(inserter.read_batches(rows, size, stream=True), inserter.write)
        except RowsRaised as raised:
            raise raised.error from None  # the iterable's own error, as between batches
    batches = inserter.read_batches(rows, size)
    if workers == 1:
        return make_runner().run(batches, inserter.write)
    if atomic:
        raise ValueError("atomic=True needs one transaction, so one connection: it cannot run on workers.")
    if connections[using].in_atomic_block:
        raise TransactionManagementError(
            "batch_create(workers=...) commits on the workers' own connections, outside your transaction:"
            " call it outside atomic(), or use workers=1."
        )
    # Each worker COPYs on its own connection while the calling thread reads the next batches from
    # the iterable (on its own connection, never in COPY).
    return run_on_workers(batches, inserter.write, make_runner, operation="create", workers=workers, progress=progress)
