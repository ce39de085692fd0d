"""Bulk operations against the real PostgreSQL primary (and PgBouncer in transaction mode)."""

from __future__ import annotations

import datetime as dt
import io
import json
import threading
from decimal import Decimal
from typing import Any

import psycopg
import psycopg.types.json
import pytest
from django.db import connection, connections, transaction
from django.db.models.signals import post_delete, post_migrate
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext, override_settings

from django_scaleops import metrics
from django_scaleops.bulk import BatchResult, BulkOperationError, columns, keyset_batches, progress_bar_callback
from django_scaleops.bulk.create import Inserter
from django_scaleops.bulk.reading import InstanceForm, PositionalForm
from django_scaleops.progress import ProgressBar
from django_scaleops.signals import bulk_write_committed
from tests.bulkapp.models import MOOD_DDL, PARTITIONED_DDL, Dog, Event, IsolationProbe, Item, Mood, Owner, Pet

pytestmark = pytest.mark.django_db(transaction=True)

UTC = dt.UTC


@pytest.fixture
def events():
    with connection.cursor() as cursor:
        cursor.execute(PARTITIONED_DDL)
    yield Event
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE bulkapp_event")


@pytest.fixture
def sent():
    calls: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        calls.append({"sender": sender, **kwargs})

    bulk_write_committed.connect(receiver, weak=False)
    yield calls
    bulk_write_committed.disconnect(receiver)


def item_rows(count: int, *, bad: frozenset[int] = frozenset(), start: int = 0):
    for n in range(start, start + count):
        yield (
            f"sku-{n}",
            f"item {n}",
            -1 if n in bad else n % 50,
            Decimal("1.50"),
            ["a"],
            dt.datetime(2025, 1, 1, tzinfo=UTC),
        )


ITEM_FIELDS = ["sku", "name", "quantity", "price", "tags", "created_at"]


# ---- batch_create


def test_create_from_generator_of_tuples_by_copy():
    with CaptureQueriesContext(connection) as queries:
        result = Item.objects.batch_create(item_rows(2500), fields=ITEM_FIELDS, batch_size=1000)
    assert (result.rows_done, result.rows_seen, result.batches_committed, result.ok) == (2500, 2500, 3, True)
    assert not any(q["sql"].startswith("INSERT") for q in queries.captured_queries)  # COPY, not INSERT
    item = Item.objects.get(sku="sku-7")
    assert (item.name, item.quantity, item.price, item.tags) == ("item 7", 7, Decimal("1.50"), ["a"])
    assert item.created_at == dt.datetime(2025, 1, 1, tzinfo=UTC)
    assert item.updated_at is None or isinstance(item.updated_at, dt.datetime)


def test_create_instances_and_mappings_fill_defaults_and_auto_now():
    before = dt.datetime.now(UTC)
    instances = (Item(sku=f"i{n}", name="x", quantity=n) for n in range(10))
    assert Item.objects.batch_create(instances, batch_size=4).rows_done == 10
    mappings = ({"sku": f"m{n}", "name": "y"} for n in range(5))
    assert Item.objects.batch_create(mappings).rows_done == 5
    item = Item.objects.get(sku="m3")
    assert (item.quantity, item.tags, item.price) == (0, [], Decimal("0"))
    assert item.created_at >= before
    assert Item.objects.get(sku="i9").updated_at >= before  # auto_now ran as in save()
    stamps = Item.objects.filter(sku__startswith="m").values_list("updated_at", flat=True)
    assert len(set(stamps)) == 1 and stamps[0] >= before  # one auto_now stamp per batch of mappings


def test_mappings_are_read_by_key_whatever_their_order_or_keys():
    rows = [
        {"sku": "a", "name": "first", "quantity": 1},
        {"quantity": 2, "sku": "b", "name": "second"},  # same keys, another order
        {"name": "third", "sku": "c"},  # fewer keys: its own shape, quantity from the default
        {"sku": "d"},  # a single key
    ]
    assert Item.objects.batch_create(rows).rows_done == 4
    stored = {sku: (name, quantity) for sku, name, quantity in Item.objects.values_list("sku", "name", "quantity")}
    assert stored == {"a": ("first", 1), "b": ("second", 2), "c": ("third", 0), "d": ("", 0)}
    with pytest.raises(BulkOperationError, match="no concrete field 'colour'"):
        Item.objects.batch_create([{"sku": "e", "name": "x"}, {"sku": "f", "colour": "red"}])
    assert Owner.objects.batch_create([{}, {}]).rows_done == 2  # no key at all: every field's default
    assert list(Owner.objects.values_list("name", "active")) == [("", True), ("", True)]


def test_a_batch_outside_a_transaction_is_committed_all_or_nothing_without_savepoints():
    # Outside any transaction a batch of one form is one COPY, a transaction of its own: no
    # SAVEPOINT (nor BEGIN and COMMIT) round trips around it.
    with CaptureQueriesContext(connection) as queries:
        assert Item.objects.batch_create(item_rows(300), fields=ITEM_FIELDS, batch_size=100).batches_committed == 3
    assert Item.objects.count() == 300
    assert not [query for query in queries if "SAVEPOINT" in query["sql"]]
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        Item.objects.batch_create(item_rows(100, start=300), fields=ITEM_FIELDS)
    assert [query for query in queries if query["sql"].startswith("SAVEPOINT")]  # the fast road's, undone if refused
    # Rows of several forms in one batch take a statement each, and still commit all or nothing.
    rows = [{"sku": "m1"}, {"sku": "m2", "name": "two"}, {"sku": "m1", "name": "again"}]
    with pytest.raises(BulkOperationError) as caught:
        Item.objects.batch_create(rows)
    assert caught.value.result.batches_committed == 0 and caught.value.result.failures[0].sqlstate == "23505"
    assert not Item.objects.filter(sku__in=["m1", "m2"]).exists()


def test_manual_commit_mode_leaves_the_commit_to_the_caller():
    transaction.set_autocommit(False)
    try:
        result = Item.objects.batch_create(item_rows(10), fields=ITEM_FIELDS)
        transaction.rollback()
    finally:
        transaction.set_autocommit(True)
    assert result.rows_done == 10 and not Item.objects.exists()


def test_values_psycopg_rejects_are_prepared_by_django():
    naive = dt.datetime(2025, 3, 1, 12, 0)
    with pytest.warns(RuntimeWarning, match="naive datetime"):
        result = Item.objects.batch_create([("s1", 123, "7", naive)], fields=["sku", "name", "quantity", "created_at"])
    assert result.rows_done == 1
    item = Item.objects.get(sku="s1")
    assert (item.name, item.quantity, item.created_at) == ("123", 7, naive.replace(tzinfo=UTC))


def test_types_without_a_binary_dumper_go_by_text_copy():
    with connection.cursor() as cursor:
        cursor.execute(MOOD_DDL)
    try:
        rows = ({"name": f"n{n}", "mood": "happy" if n % 2 else "sad"} for n in range(300))
        assert Mood.objects.batch_create(rows, batch_size=100).rows_done == 300
        assert Mood.objects.filter(mood="happy").count() == 150
        result = Mood.objects.batch_create([("x", "angry")], fields=["name", "mood"], continue_on_error=True)
        assert result.failures[0].sqlstate == "22P02"  # invalid_text_representation for the enum
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE bulkapp_mood")


def test_values_binary_copy_would_wrap_around_are_refused_like_postgresql(events):
    base = dt.datetime(2024, 5, 1, tzinfo=UTC)
    rows = [(base, "ok", 1), (base, "huge", 2**31), (base, "ok", 2), (base, "negative", -(2**40))]
    result = Event.objects.batch_create(rows, fields=["created_at", "kind", "amount"], continue_on_error=True)
    assert [(f.start, f.sqlstate) for f in result.failures] == [(1, "22003"), (3, "22003")]
    assert "out of range for integer column 'amount'" in str(result.failures[0].error)
    assert sorted(Event.objects.values_list("amount", flat=True)) == [1, 2]  # nothing wrapped to -2**31


def test_a_bad_value_after_rows_already_sent_still_rolls_the_copy_back(events):
    base = dt.datetime(2024, 5, 1, tzinfo=UTC)
    # The fast road checks rows a chunk at a time while the COPY runs: row 700 fails after
    # earlier chunks went to the server, which must keep none of them.
    rows = [(base, "big" if n == 700 else "ok", 2**31 if n == 700 else n) for n in range(1000)]
    result = Event.objects.batch_create(rows, fields=["created_at", "kind", "amount"], continue_on_error=True)
    assert [(f.start, f.stop, f.sqlstate) for f in result.failures] == [(700, 701, "22003")]
    assert Event.objects.count() == 999 and not Event.objects.filter(amount__lt=0).exists()
    with pytest.raises(BulkOperationError) as caught:
        Event.objects.batch_create(rows, fields=["created_at", "kind", "amount"])
    assert caught.value.result.rows_done == 0 and Event.objects.count() == 999


JSON_VALUES = [
    ["a"],
    [],
    {},
    {"nested": {"list": [1, 2.5, -0.0, 1e300, None, True]}, "é": "ünïcode ✓", "quote": 'a"b\\c\n'},
    {1: "int key", "2": "str key"},
    "a plain string",
    12345678901234567890,
]


def test_compact_json_writes_what_json_dumps_writes():
    assert columns.json_encoder_available
    for value in JSON_VALUES:
        assert columns.compact_json(value) == json.dumps(value)
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular reference"):  # json.dumps's own error, via the retry
        columns.CompactJsonbDumper(list).dump(circular)
    with pytest.raises(TypeError, match="not JSON serializable"):
        columns.CompactJsonbDumper(list).dump({"when": dt.date(2025, 1, 1)})


@pytest.mark.parametrize("workers", [1, 2])  # JSON values are encoded as they are read
def test_json_values_stored_by_copy_as_save_stores_them(workers):
    rows = [(f"j{n}", value) for n, value in enumerate(JSON_VALUES)]
    assert Item.objects.batch_create(rows, fields=["sku", "tags"], workers=workers).rows_done == len(rows)
    dicts = [{"tags": value, "sku": f"d-{sku}"} for sku, value in rows]
    assert Item.objects.batch_create(dicts, workers=workers).rows_done == len(dicts)
    for sku, value in rows:
        assert Item.objects.get(sku=f"d-{sku}").tags == Item.objects.get(sku=sku).tags
        Item.objects.create(sku=f"saved-{sku}", tags=value)
    stored = dict(Item.objects.values_list("sku", "tags"))
    assert len(stored) == 3 * len(rows)
    for sku, _ in rows:
        assert stored[sku] == stored[f"saved-{sku}"], sku


@pytest.mark.parametrize("workers", [1, 2])
def test_json_not_serializable_is_refused_clearly(workers):
    good = [("ok-0", ["a"]), ("ok-1", {"b": 1})]
    for bad in [{"when": dt.date(2025, 1, 1)}, b"[1]"]:
        with pytest.raises(BulkOperationError) as caught:
            Item.objects.batch_create([*good, ("d1", bad)], fields=["sku", "tags"], workers=workers)
        assert "not JSON serializable" in str(caught.value.__cause__)
    assert not Item.objects.exists()


def test_batches_of_one_form_are_normalised_and_others_kept_as_given():
    # Tuples and dicts of one form are read into tuples of values, JSON values encoded; a batch
    # with a row of another form, or a value json.dumps refuses, holds the caller's rows, in
    # order, for the writer to sort out and report.
    inserter = Inserter(
        Item,
        "default",
        fields=["sku", "tags"],
        returning=False,
        on_conflict=None,
        conflict_fields=None,
        update_fields=None,
    )
    tuples = [(f"t{n}", {"n": n} if n % 3 else None) for n in range(600)]
    batches = list(inserter.read_batches(iter(tuples), 500))
    assert [len(b) for b in batches] == [500, 100]
    assert all(b.form is inserter.forms.tuples for b in batches)
    assert batches[0][:2] == [("t0", None), ("t1", b'{"n": 1}')]
    assert batches[0][10:20].form is inserter.forms.tuples  # bisection keeps the form
    mixed = [*tuples[:300], ("x", {1, 2}), *tuples[300:]]  # a set: json.dumps refuses it
    batches = list(inserter.read_batches(iter(mixed), 500))
    assert batches[0].form is None and batches[0] == mixed[:500]
    assert batches[1].form is inserter.forms.tuples and len(batches[1]) == 101
    lists = [[f"l{n}", [n]] for n in range(3)]  # any sequence: read into tuples
    assert list(inserter.read_batches(iter(lists), 100)) == [[("l0", b"[0]"), ("l1", b"[1]"), ("l2", b"[2]")]]
    dicts = [{"sku": f"d{n}", "tags": [n]} for n in range(10)]
    (batch,) = inserter.read_batches(iter([*dicts, {"tags": [10], "sku": "d10"}]), 100)  # any key order
    assert isinstance(batch.form, PositionalForm) and batch.form.keys == ("sku", "tags")
    assert batch[2] == ("d2", b"[2]") and batch[10] == ("d10", b"[10]")
    other_keys = [*dicts, {"sku": "e", "tags": [1], "name": "n"}]
    assert [(b.form, b) for b in inserter.read_batches(iter(other_keys), 100)] == [(None, other_keys)]
    same_count = [*dicts, {"sku": "e", "name": "n"}]  # as many keys, not the same ones
    assert [(b.form, b) for b in inserter.read_batches(iter(same_count), 100)] == [(None, same_count)]
    objs = [Item(sku=f"i{n}") for n in range(600)]  # instances stay as they are
    batches = list(inserter.read_batches(iter(objs), 500))
    assert batches == [objs[:500], objs[500:]] and all(isinstance(b.form, InstanceForm) for b in batches)
    saved = [Item(pk=n, sku=f"s{n}") for n in range(3)]  # a key set: another form
    assert [b.form for b in inserter.read_batches(iter([*objs[:2], *saved]), 100)] == [None]


@pytest.mark.parametrize("workers", [1, 2])
def test_batch_goes_down_the_prepared_road_when_a_value_needs_django(workers):
    # Encoded JSON with workers; the refused COPY (a transaction of its own) leaves nothing behind.
    rows = [
        (f"p{n}", "p", "7" if n == 3 else n, Decimal("1.00"), {"n": [n]}, dt.datetime(2025, 1, 1, tzinfo=UTC))
        for n in range(10)
    ]
    assert Item.objects.batch_create(rows, fields=ITEM_FIELDS, workers=workers).rows_done == 10
    assert Item.objects.count() == 10
    item = Item.objects.get(sku="p3")
    assert (item.quantity, item.tags) == (7, {"n": [3]})  # "7" prepared by Django, JSON text as encoded
    assert Item.objects.get(sku="p4").tags == {"n": [4]}


def test_json_dumps_set_on_the_connection_is_kept():
    connection.ensure_connection()
    psycopg.types.json.set_json_dumps(lambda obj: json.dumps({"wrapped": obj}), connection.connection)
    try:
        Item.objects.batch_create([("w1", ["a"])], fields=["sku", "tags"])
    finally:
        psycopg.types.json.set_json_dumps(json.dumps, connection.connection)
    assert Item.objects.get(sku="w1").tags == {"wrapped": ["a"]}


def test_booleans_follow_django_not_python_truthiness():
    rows = [("t", "t"), ("zero", 0), ("two", 2), ("true", True)]
    result = Owner.objects.batch_create(rows, fields=["name", "active"], continue_on_error=True)
    assert [(f.start, type(f.error).__name__) for f in result.failures] == [(2, "ValidationError")]
    assert dict(Owner.objects.values_list("name", "active")) == {"t": True, "zero": False, "true": True}


def test_column_types_are_read_once_and_forgotten_after_migrations():
    columns.forget_table()
    with CaptureQueriesContext(connection) as queries:
        first = columns.table_columns(connection, "bulkapp_item")
        assert columns.table_columns(connection, "bulkapp_item") is first
    assert len(queries) == 1 and first["quantity"].base_type == "integer"
    uid = "django_scaleops.bulk.forget_table"
    assert post_migrate.disconnect(dispatch_uid=uid), "the cache is not dropped after migrations"
    post_migrate.connect(columns.forget_table, dispatch_uid=uid)
    columns.forget_table("bulkapp_item")
    assert columns.table_columns(connection, "bulkapp_item") is not first


def test_multi_table_inheritance_is_refused_clearly():
    with pytest.raises(ValueError, match="multi-table inherited"):
        Dog.objects.batch_create([Dog(name="rex", breed="lab")])
    with pytest.raises(ValueError, match="parent model's table"):
        Dog.objects.batch_update([], ["name"])
    assert Dog.objects.batch_update([], ["breed"]).rows_done == 0


def test_bad_input_gets_a_clear_error():
    with pytest.raises(BulkOperationError, match="needs fields="):
        Item.objects.batch_create([("a", "b")])
    with pytest.raises(BulkOperationError, match="no concrete field 'nope'"):
        Item.objects.batch_create([{"nope": 1}])
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        Item.objects.batch_create([], batch_size=0)
    with pytest.raises(BulkOperationError, match="2 values but fields= names 3"):
        Item.objects.batch_create([("a", "b")], fields=["sku", "name", "quantity"])
    with pytest.raises(ValueError, match="isolation_level must be one of"):
        Item.objects.batch_create([], isolation_level="chaos")
    assert Item.objects.count() == 0


def test_three_bad_rows_among_100k_are_reported_exactly_and_the_rest_inserted():
    bad = frozenset({17, 50_123, 99_998})
    result = Item.objects.batch_create(
        item_rows(100_000, bad=bad), fields=ITEM_FIELDS, batch_size=5000, continue_on_error=True
    )
    assert [(f.start, f.stop) for f in result.failures] == [(17, 18), (50_123, 50_124), (99_998, 99_999)]
    assert [f.batch_index for f in result.failures] == [0, 10, 19]
    assert {f.sqlstate for f in result.failures} == {"23514"}  # check_violation
    assert (result.rows_done, result.rows_seen, result.batches_committed) == (99_997, 100_000, 20)
    assert Item.objects.count() == 99_997
    assert not Item.objects.filter(sku__in=[f"sku-{n}" for n in bad]).exists()
    with pytest.raises(BulkOperationError):
        result.raise_for_errors()


def test_atomic_with_bad_rows_reports_them_and_inserts_none(sent):
    bad = frozenset({3, 60_000, 99_999})
    result = Item.objects.batch_create(
        item_rows(100_000, bad=bad), fields=ITEM_FIELDS, batch_size=5000, atomic=True, continue_on_error=True
    )
    assert [(f.start, f.stop) for f in result.failures] == [(3, 4), (60_000, 60_001), (99_999, 100_000)]
    assert result.rolled_back and result.rows_done == 0 and result.batches_committed == 0
    assert Item.objects.count() == 0
    assert sent == []  # nothing committed, nothing announced


def test_stop_on_first_failure_keeps_earlier_batches():
    with pytest.raises(BulkOperationError) as info:
        Item.objects.batch_create(item_rows(3000, bad=frozenset({1500})), fields=ITEM_FIELDS, batch_size=1000)
    result = info.value.result
    assert (result.rows_done, result.batches_committed) == (1000, 1)
    assert [(f.batch_index, f.start, f.stop) for f in result.failures] == [(1, 1000, 2000)]
    assert isinstance(info.value.__cause__, Exception)
    assert Item.objects.count() == 1000


def test_workers_report_the_same_exact_failures_and_insert_the_rest():
    bad = frozenset({17, 50_123, 99_998})
    used: set[int] = set()
    seen: list[int] = []
    inside = threading.Lock()

    def progress(result: BatchResult) -> None:
        assert inside.acquire(blocking=False), "progress called by two workers at once"
        try:
            used.add(threading.get_ident())
            seen.append(result.rows_seen)
        finally:
            inside.release()

    result = Item.objects.batch_create(
        item_rows(100_000, bad=bad),
        fields=ITEM_FIELDS,
        batch_size=5000,
        continue_on_error=True,
        workers=2,
        progress=progress,
    )
    assert [(f.start, f.stop) for f in result.failures] == [(17, 18), (50_123, 50_124), (99_998, 99_999)]
    assert [f.batch_index for f in result.failures] == [0, 10, 19]
    assert (result.rows_done, result.rows_seen, result.batches_committed) == (99_997, 100_000, 20)
    assert Item.objects.count() == 99_997
    assert not Item.objects.filter(sku__in=[f"sku-{n}" for n in bad]).exists()
    assert used and threading.get_ident() not in used  # the batches ran on worker threads
    assert seen == sorted(seen) and len(seen) == 20 and seen[-1] == 100_000  # newer snapshots each time


def test_workers_stop_on_first_failure_and_say_what_was_committed():
    with pytest.raises(BulkOperationError) as info:
        Item.objects.batch_create(
            item_rows(20_000, bad=frozenset({1500})), fields=ITEM_FIELDS, batch_size=1000, workers=2
        )
    result = info.value.result
    assert [(f.batch_index, f.start, f.stop) for f in result.failures] == [(1, 1000, 2000)]
    assert result.rows_done == result.batches_committed * 1000 == Item.objects.count()
    assert not Item.objects.filter(sku="sku-1500").exists()


def test_workers_return_keys_in_input_order_and_close_their_connections(monkeypatch):
    objs = [Item(sku=f"w{n}", name="w") for n in range(2000)]
    seen: list[Any] = []
    original = columns.copy_rows

    def spy(conn: Any, *args: Any, **kwargs: Any) -> int:
        seen.append(conn)
        return original(conn, *args, **kwargs)

    result = Item.objects.batch_create(objs, returning=True, batch_size=150, workers=3)
    assert result.pks == [obj.pk for obj in objs] and len(set(result.pks)) == 2000
    assert list(Item.objects.order_by("pk").values_list("pk", flat=True)) == sorted(result.pks)
    # COPY (no returning) on the workers' connections, each closed when its worker ends.
    monkeypatch.setattr(columns, "copy_rows", spy)
    done = Item.objects.batch_create(item_rows(3000), fields=ITEM_FIELDS, batch_size=500, workers=2)
    assert done.rows_done == 3000 and done.batches_committed == 6
    assert seen and all(conn is not connections["default"] for conn in seen)  # not this thread's
    assert all(conn.connection is None for conn in seen)  # closed


def test_workers_read_the_iterable_on_the_callers_connection():
    # The source queries the database while the workers COPY: on the caller's connection, which
    # is never in COPY, so it does not collide with them.
    Owner.objects.batch_create(((f"o{n}", True) for n in range(3000)), fields=["name", "active"])

    def source():
        for owner in Owner.objects.order_by("pk").iterator(chunk_size=200):
            yield (f"sku-{owner.name}", owner.name, 1, Decimal("2.00"), [], dt.datetime(2025, 1, 1, tzinfo=UTC))

    result = Item.objects.batch_create(source(), fields=ITEM_FIELDS, batch_size=250, workers=2)
    assert result.ok and result.rows_done == 3000
    assert set(Item.objects.values_list("name", flat=True)) == {f"o{n}" for n in range(3000)}


def test_workers_write_what_was_read_before_the_iterable_failed():
    def failing():
        yield from item_rows(2500)
        raise RuntimeError("the source broke")

    with pytest.raises(BulkOperationError) as info:
        Item.objects.batch_create(failing(), fields=ITEM_FIELDS, batch_size=500, workers=2)
    assert isinstance(info.value.__cause__, RuntimeError)
    # Five batches were read before the failure, some still waiting in the queue: all are written.
    assert info.value.result.rows_done == 2500 == Item.objects.count()


def test_workers_with_fewer_batches_than_threads_or_none_end_every_thread():
    threads = threading.active_count()
    assert Item.objects.batch_create(item_rows(10), fields=ITEM_FIELDS, workers=4).rows_done == 10
    assert Item.objects.batch_create([], workers=3).rows_seen == 0
    assert Item.objects.parallel_batch_process([], lambda rows: None, workers=3).batches_committed == 0
    assert threading.active_count() == threads


def test_workers_refuse_one_transaction():
    with pytest.raises(ValueError, match="cannot run on workers"):
        Item.objects.batch_create(item_rows(10), fields=ITEM_FIELDS, workers=2, atomic=True)
    with transaction.atomic(), pytest.raises(TransactionManagementError, match="outside your transaction"):
        Item.objects.batch_create(item_rows(10), fields=ITEM_FIELDS, workers=2)
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        Item.objects.batch_create(item_rows(10), fields=ITEM_FIELDS, workers=0)
    with pytest.raises(ValueError, match="isolation_level must be one of"):
        Item.objects.batch_create(item_rows(10), fields=ITEM_FIELDS, workers=2, isolation_level="chaos")
    assert Item.objects.count() == 0


def test_returning_sets_primary_keys_on_instances_small_and_large_batches():
    small = [Item(sku=f"r{n}", name="r") for n in range(5)]
    result = Item.objects.batch_create(small, returning=True)
    assert result.pks == [obj.pk for obj in small] and None not in result.pks
    assert all(not obj._state.adding and obj._state.db == "default" for obj in small)
    large = [Item(sku=f"L{n}", name="L") for n in range(3000)]
    result = Item.objects.batch_create(large, returning=True, batch_size=3000)  # via temp table
    assert sorted(result.pks) == sorted(obj.pk for obj in large)
    assert Item.objects.get(pk=large[-1].pk).sku == "L2999"


def test_related_objects_are_checked_as_save_checks_them():
    # Django's check is only run on instances that hold a related object (the rest are skipped
    # by a loop in C): an unsaved one among instances given only a key is still refused.
    owner = Owner.objects.create(name="saved")
    unsaved = Owner(name="unsaved")
    pets = [*(Pet(owner_id=owner.pk, name=f"p{n}") for n in range(70)), Pet(owner=unsaved, name="bad")]
    with pytest.raises(BulkOperationError) as caught:
        Pet.objects.batch_create(pets)
    assert isinstance(caught.value.__cause__, ValueError)
    assert "unsaved related object 'owner'" in str(caught.value.__cause__)
    assert Pet.objects.count() == 0
    # Assigned before it was saved: its key is taken when the pet is written, as save() does.
    later = Owner(name="later")
    pet = Pet(owner=later, name="late")
    later.save()
    Pet.objects.batch_create([Pet(owner_id=owner.pk, name="plain"), pet])
    assert pet.owner_id == later.pk
    assert dict(Pet.objects.values_list("name", "owner_id")) == {"plain": owner.pk, "late": later.pk}


def test_instances_writing_one_column_each():
    # The key and the db_default column are left to the database: each row is one value.
    probes = [IsolationProbe(label=f"one{n}") for n in range(70)]
    assert IsolationProbe.objects.batch_create(probes).rows_done == 70
    assert sorted(IsolationProbe.objects.values_list("label", flat=True)) == sorted(f"one{n}" for n in range(70))
    assert set(IsolationProbe.objects.values_list("isolation", flat=True)) == {"read committed"}


def test_instances_with_deferred_fields_are_read_through_their_descriptors():
    Item.objects.batch_create(item_rows(80), fields=ITEM_FIELDS)
    loaded = list(Item.objects.defer("name").order_by("pk"))  # "name" is not in their __dict__
    for obj in loaded:
        obj.quantity = 7
    result = Item.objects.batch_create(loaded, on_conflict="update", conflict_fields=["id"], batch_size=100)
    assert result.rows_done == 80
    assert set(Item.objects.values_list("quantity", flat=True)) == {7}
    assert Item.objects.get(sku="sku-3").name == "item 3"  # read from the row, written back unchanged


@override_settings(SCALEOPS_BULK_TEMP_TABLE_ROWS=100_000)
def test_values_statements_stay_under_the_bind_parameter_limit():
    columns = len([f for f in Item._meta.concrete_fields if not f.primary_key])  # 7
    rows = ((f"p{n}", "p") for n in range(20_000))
    with CaptureQueriesContext(connection) as queries:
        result = Item.objects.batch_create(rows, fields=["sku", "name"], batch_size=20_000, returning=True)
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    per_statement = 65_535 // columns
    assert len(inserts) == -(-20_000 // per_statement)  # ceil: 3 statements of <= 9,362 rows
    assert result.rows_done == 20_000 and len(result.pks) == 20_000


@pytest.mark.parametrize("size", [50, 3000])  # VALUES list, then COPY'd temp table
def test_on_conflict_ignore_and_update(size):
    Item.objects.batch_create(item_rows(size), fields=ITEM_FIELDS)
    again: list[tuple[Any, ...]] = [
        (f"sku-{n}", "renamed", 49, Decimal("9.99"), [], dt.datetime(2025, 2, 1, tzinfo=UTC)) for n in range(size + 10)
    ]
    ignored = Item.objects.batch_create(
        again, fields=ITEM_FIELDS, batch_size=size + 10, on_conflict="ignore", conflict_fields=["sku"]
    )
    assert ignored.rows_done == 10
    assert Item.objects.filter(name="renamed").count() == 10
    updated = Item.objects.batch_create(
        again,
        fields=ITEM_FIELDS,
        batch_size=size + 10,
        on_conflict="update",
        conflict_fields=["sku"],
        update_fields=["name", "price"],
    )
    assert updated.rows_done == size + 10
    item = Item.objects.get(sku="sku-1")
    assert (item.name, item.price, item.quantity) == ("renamed", Decimal("9.99"), 1)  # quantity not in update_fields
    with pytest.raises(ValueError, match="needs conflict_fields"):
        Item.objects.batch_create(again, fields=ITEM_FIELDS, on_conflict="update")


def test_create_on_partitioned_table_routes_rows_to_partitions(events):
    rows = ((dt.datetime(2024 + n % 2, 6, 1, tzinfo=UTC), "click", n) for n in range(4000))
    result = Event.objects.batch_create(rows, fields=["created_at", "kind", "amount"], batch_size=1500)
    assert result.rows_done == 4000
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM ONLY bulkapp_event_2024")
        assert cursor.fetchone()[0] == 2000
    returned = Event.objects.batch_create(
        [Event(created_at=dt.datetime(2025, 7, 1, tzinfo=UTC), kind="x", amount=1)], returning=True
    )
    assert Event.objects.get(pk=returned.pks[0]).kind == "x"


# ---- batch_update


@pytest.mark.parametrize("size", [60, 2500])  # VALUES list, then COPY'd temp table
def test_update_of_many_fields(size, sent):
    Item.objects.batch_create(item_rows(size), fields=ITEM_FIELDS)
    objs = list(Item.objects.order_by("?"))
    stamp = dt.datetime(2030, 1, 1, tzinfo=UTC)
    for obj in objs:
        obj.name, obj.quantity, obj.price, obj.tags, obj.created_at = (
            f"u{obj.pk}",
            42,
            Decimal("3.25"),
            {"k": obj.pk},
            stamp,
        )
    sent.clear()
    result = Item.objects.batch_update(objs, ["name", "quantity", "price", "tags", "created_at"], batch_size=1000)
    assert (result.rows_done, result.ok) == (size, True)
    assert len(sent) == result.batches_committed == -(-size // 1000)
    assert sorted(pk for call in sent for pk in call["pks"]) == sorted(o.pk for o in objs)
    assert all(call["pks"] == sorted(call["pks"]) for call in sent)  # each batch sorted by key
    for item in Item.objects.all():
        assert (item.name, item.quantity, item.price, item.tags, item.created_at) == (
            f"u{item.pk}",
            42,
            Decimal("3.25"),
            {"k": item.pk},
            stamp,
        )


def test_update_rejects_bad_input():
    with pytest.raises(ValueError, match="cannot change primary keys"):
        Item.objects.batch_update([], ["id"])
    with pytest.raises(BulkOperationError, match="without a primary key"):
        Item.objects.batch_update([Item(sku="x")], ["name"])
    Item.objects.batch_create(item_rows(3), fields=ITEM_FIELDS)
    objs = list(Item.objects.all())
    objs[1].quantity = -5  # violates the check constraint
    result = Item.objects.batch_update(objs, ["quantity"], continue_on_error=True)
    assert [(f.start, f.stop) for f in result.failures] == [(1, 2)]  # position in the input
    assert result.rows_done == 2


def test_update_on_partitioned_table(events):
    Event.objects.batch_create(
        ((dt.datetime(2024, 3, 1, tzinfo=UTC), "a", n) for n in range(1200)), fields=["created_at", "kind", "amount"]
    )
    objs = list(Event.objects.all())
    for obj in objs:
        obj.kind, obj.amount = "b", obj.amount + 1
    assert Event.objects.batch_update(objs, ["kind", "amount"], batch_size=2000).rows_done == 1200
    assert Event.objects.filter(kind="b").count() == 1200


# ---- batch_delete


def test_delete_without_python_work_does_not_load_instances(sent):
    Item.objects.batch_create(item_rows(2500), fields=ITEM_FIELDS)
    sent.clear()
    with CaptureQueriesContext(connection) as queries:
        result = Item.objects.filter(quantity__lt=25).batch_delete(batch_size=400)
    assert result.rows_done == 1250 == result.rows_seen
    assert Item.objects.count() == 1250 and not Item.objects.filter(quantity__lt=25).exists()
    selects = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    assert selects and all('"bulkapp_item"."name"' not in sql for sql in selects)  # keys only
    assert len(sent) == result.batches_committed == 4
    assert all(call["operation"] == "delete" for call in sent)


def test_delete_with_receiver_or_cascade_uses_the_collector():
    owners = [Owner(name=f"o{n}") for n in range(30)]
    Owner.objects.batch_create(owners, returning=True)
    Pet.objects.batch_create(Pet(owner=o, name="p") for o in owners for _ in range(3))
    result = Owner.objects.filter(name__lt="o2").batch_delete(batch_size=7)  # cascade to pets
    assert result.rows_done == 12
    assert Pet.objects.count() == (30 - 12) * 3
    seen: list[int] = []

    def receiver(instance: Any, **kwargs: Any) -> None:
        seen.append(instance.pk)

    post_delete.connect(receiver, sender=Pet)
    try:
        assert Pet.objects.batch_delete(batch_size=10).rows_done == 54
    finally:
        post_delete.disconnect(receiver, sender=Pet)
    assert len(seen) == 54


def test_delete_on_partitioned_table(events):
    Event.objects.batch_create(
        ((dt.datetime(2024 + n % 2, 1, 5, tzinfo=UTC), "k", n) for n in range(3000)),
        fields=["created_at", "kind", "amount"],
    )
    result = Event.objects.filter(amount__gte=1000).batch_delete(batch_size=500)
    assert result.rows_done == 2000 and Event.objects.count() == 1000


def test_delete_rejects_sliced_querysets():
    with pytest.raises(TypeError, match="limit"):
        Item.objects.all()[:5].batch_delete()


# ---- streaming and parallel processing


def test_stream_visits_every_row_once_in_key_order(events):
    Event.objects.batch_create(
        ((dt.datetime(2024, 2, 1, tzinfo=UTC), "s", n) for n in range(2345)), fields=["created_at", "kind", "amount"]
    )
    seen: list[int] = []
    result = Event.objects.filter(amount__gte=345).stream_batch_process(
        lambda rows: seen.extend(r.pk for r in rows), batch_size=500
    )
    assert result.rows_done == 2000 and result.batches_committed == 4
    assert seen == sorted(seen) and len(set(seen)) == 2000


@pytest.mark.django_db(transaction=True, databases=["default", "pgbouncer"])
def test_stream_and_writes_behind_pgbouncer_transaction_mode():
    result = Item.objects.using("pgbouncer").batch_create(item_rows(3000), fields=ITEM_FIELDS, batch_size=700)
    assert result.rows_done == 3000
    seen: list[str] = []

    def touch(rows: list[Item]) -> None:
        seen.extend(r.sku for r in rows)
        Item.objects.using("pgbouncer").filter(pk__in=[r.pk for r in rows]).update(name="seen")

    result = Item.objects.using("pgbouncer").stream_batch_process(touch, batch_size=256)
    assert result.rows_done == 3000 and len(set(seen)) == 3000
    assert Item.objects.filter(name="seen").count() == 3000
    assert Item.objects.using("pgbouncer").batch_delete(batch_size=1000).rows_done == 3000


def test_keyset_batches_of_values_and_values_lists():
    Item.objects.batch_create(item_rows(25), fields=ITEM_FIELDS)
    expected = list(Item.objects.order_by("pk").values_list("pk", flat=True))
    batches = list(keyset_batches(Item.objects.values_list("pk", flat=True), 10))
    assert [len(b) for b in batches] == [10, 10, 5]
    assert [pk for batch in batches for pk in batch] == expected
    tuples = list(keyset_batches(Item.objects.values_list("name", "id"), 10))
    assert [row[1] for batch in tuples for row in batch] == expected
    dicts = list(keyset_batches(Item.objects.values("sku", "id"), 7))
    assert [row["id"] for batch in dicts for row in batch] == expected
    by_sku = list(keyset_batches(Item.objects.values_list("sku", flat=True), 10, key="sku"))
    assert [s for batch in by_sku for s in batch] == sorted(f"sku-{n}" for n in range(25))
    with pytest.raises(ValueError, match="among the values"):
        next(keyset_batches(Item.objects.values_list("name"), 10))


def test_parallel_processing_one_connection_per_worker_closed_after():
    Item.objects.batch_create(item_rows(1000), fields=ITEM_FIELDS)
    lock = threading.Lock()
    used: dict[int, Any] = {}
    seen: list[int] = []

    def fn(rows: list[Item]) -> None:
        with lock:
            used[threading.get_ident()] = connections["default"]
            seen.extend(r.pk for r in rows)
        Item.objects.filter(pk__in=[r.pk for r in rows]).update(quantity=1)

    result = Item.objects.parallel_batch_process(Item.objects.all(), fn, workers=3, batch_size=50)
    assert result.rows_done == 1000 and result.batches_committed == 20 and len(set(seen)) == 1000
    assert threading.get_ident() not in used and 1 <= len(used) <= 3
    assert all(conn.connection is None for conn in used.values())  # closed
    assert Item.objects.filter(quantity=1).count() == 1000

    items = list(range(100))
    got: list[int] = []

    def boom(rows: list[int]) -> None:
        if 42 in rows:
            raise RuntimeError("bad item")
        with lock:
            got.extend(rows)

    result = Item.objects.parallel_batch_process(items, boom, workers=2, batch_size=10, continue_on_error=True)
    assert [(f.start, f.stop) for f in result.failures] == [(42, 43)]
    assert sorted(got) == [n for n in items if n != 42]


# ---- transactions, isolation, retries, signals


@pytest.mark.parametrize(
    ("level", "expected"),
    [(None, "read committed"), ("repeatable read", "repeatable read"), ("serializable", "serializable")],
)
def test_isolation_level_is_applied_to_the_batch_transaction(level, expected):
    IsolationProbe.objects.batch_create(({"label": str(n)} for n in range(3)), isolation_level=level)
    assert set(IsolationProbe.objects.values_list("isolation", flat=True)) == {expected}
    inside: list[str] = []

    def probe(rows: list[Any]) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('transaction_isolation')")
            inside.append(cursor.fetchone()[0])

    IsolationProbe.objects.stream_batch_process(probe, batch_size=2, isolation_level=level)
    assert inside == [expected, expected]


def test_isolation_level_inside_a_callers_transaction_is_refused():
    with transaction.atomic(), pytest.raises(TransactionManagementError, match="outside atomic"):
        Item.objects.batch_create([], isolation_level="serializable")


def test_serialization_failure_is_retried_with_a_second_connection():
    Item.objects.batch_create(item_rows(4), fields=ITEM_FIELDS)
    other = psycopg.connect(**connection.get_connection_params(), autocommit=True)
    attempts: list[int] = []

    def fn(rows: list[Item]) -> None:
        attempts.append(len(rows))
        with connection.cursor() as cursor:
            cursor.execute("SELECT quantity FROM bulkapp_item WHERE sku = 'sku-1'")  # snapshot taken
        if len(attempts) == 1:  # another client commits a change to the same row meanwhile
            other.execute("UPDATE bulkapp_item SET quantity = 40 WHERE sku = 'sku-1'")
        Item.objects.filter(sku="sku-1").update(quantity=7)  # 40001 on the first attempt

    try:
        result = Item.objects.stream_batch_process(fn, batch_size=10, isolation_level="repeatable read")
    finally:
        other.close()
    assert result.retries == 1 and len(attempts) == 2 and result.ok
    assert Item.objects.get(sku="sku-1").quantity == 7


@pytest.mark.parametrize(
    ("error", "sqlstate"),
    [(psycopg.errors.SerializationFailure, "40001"), (psycopg.errors.DeadlockDetected, "40P01")],
)
def test_retries_are_bounded_and_other_errors_are_not_retried(error, sqlstate):
    Item.objects.batch_create(item_rows(3), fields=ITEM_FIELDS)
    calls: list[int] = []

    def always_conflicts(rows: list[Item]) -> None:
        calls.append(1)
        raise error("raised by the caller's function")

    with pytest.raises(BulkOperationError) as info:
        Item.objects.stream_batch_process(always_conflicts, isolation_level="serializable", max_retries=2)
    assert info.value.result.retries == 2 and len(calls) == 3
    assert info.value.result.failures[0].sqlstate == sqlstate
    calls.clear()

    def not_retryable(rows: list[Item]) -> None:
        calls.append(1)
        raise psycopg.errors.UniqueViolation("not a transient error")

    with pytest.raises(BulkOperationError):
        Item.objects.stream_batch_process(not_retryable, max_retries=5)
    assert len(calls) == 1


def test_signal_once_per_committed_batch_and_never_on_rollback(sent):
    Item.objects.batch_create(item_rows(2500), fields=ITEM_FIELDS, batch_size=1000)
    assert [(c["sender"], c["using"], c["operation"], c["pks"]) for c in sent] == [
        (Item, "default", "create", None)
    ] * 3
    sent.clear()
    with transaction.atomic():
        Item.objects.batch_create(item_rows(10, start=5000), fields=ITEM_FIELDS, batch_size=5)
        assert sent == []  # not before the caller's commit
    assert len(sent) == 2
    sent.clear()
    with transaction.atomic():
        Item.objects.batch_create(item_rows(10, start=6000), fields=ITEM_FIELDS, batch_size=5)
        transaction.set_rollback(True)  # the caller rolls back
    with pytest.raises(BulkOperationError):
        Item.objects.batch_create(
            item_rows(10, start=7000, bad=frozenset({7008})), fields=ITEM_FIELDS, batch_size=5, atomic=True
        )
    assert sent == []
    assert Item.objects.count() == 2510


def test_progress_callback_and_metrics_source():
    calls: list[tuple[int, int]] = []

    def progress(result: BatchResult) -> None:
        calls.append((result.rows_done, result.batches_committed))

    Item.objects.batch_create(item_rows(250), fields=ITEM_FIELDS, batch_size=100, progress=progress)
    assert calls == [(100, 1), (200, 2), (250, 3)]
    out = io.StringIO()
    with ProgressBar(out, total=250, label="load", every=50) as bar:
        Item.objects.batch_create(
            item_rows(250, start=1000), fields=ITEM_FIELDS, batch_size=100, progress=progress_bar_callback(bar)
        )
    assert bar.done == 250 and "100% 250/250" in out.getvalue()
    figures = metrics.collect()["bulk"]
    assert figures["create_rows"] >= 250 and figures["create_batches"] >= 3
