"""``batch_create(stream=True)``: each COPY reads the caller's rows while it sends them.

The plain road (``stream=False``) is the oracle: whatever the rows, their forms, where the bad
ones are and how big the batches, both write the same rows and report the same failures.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.pq import TransactionStatus

from django_scaleops.bulk import BulkOperationError
from tests.bulkapp.models import Item, Owner, Pet

pytestmark = pytest.mark.django_db(transaction=True)

FIELDS = ["sku", "name", "quantity", "price", "tags", "created_at"]
WHEN = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def values(n: int, quantity: int) -> tuple[Any, ...]:
    return (f"sku-{n}", f"item {n}", quantity, Decimal("1.50"), ["a", n], WHEN)


def as_form(form: str, n: int, quantity: int) -> Any:
    row = values(n, quantity)
    if form == "tuple":
        return row
    if form == "dict":
        return dict(zip(FIELDS, row, strict=True))
    return Item(**dict(zip(FIELDS, row, strict=True)))


def empty_items() -> None:
    # TRUNCATE, not DELETE: thousands of dead rows per example would set autovacuum off in later
    # tests (its WAL moves the primary's position past the standby's).
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE bulkapp_item")


def written() -> list[tuple[Any, ...]]:
    return list(Item.objects.order_by("sku").values_list("sku", "quantity", "tags"))


def test_rows_are_read_while_the_copy_runs():
    # What streaming is for: after a batch's first chunk, rows are read while its COPY is open
    # on this connection (the server works on what was sent meanwhile). Without it, never.
    def rows(seen: list[bool]) -> Any:
        for n in range(3000):
            connection.ensure_connection()
            seen.append(connection.connection.pgconn.transaction_status == TransactionStatus.ACTIVE)
            yield values(n, 1)

    streamed: list[bool] = []
    assert Item.objects.batch_create(rows(streamed), fields=FIELDS, batch_size=1000, stream=True).rows_done == 3000
    plain: list[bool] = []
    empty_items()
    assert Item.objects.batch_create(rows(plain), fields=FIELDS, batch_size=1000).rows_done == 3000
    assert not any(plain)
    # Each batch reads its first chunk (64 rows) before the COPY starts, the rest during it.
    assert streamed.count(True) == 3000 - 3 * 64
    assert Item.objects.count() == 3000


def test_an_error_of_the_iterable_is_raised_as_it_is_and_its_batch_not_written():
    def failing() -> Any:
        for n in range(2600):
            yield values(n, 1)
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="the source broke"):
        Item.objects.batch_create(failing(), fields=FIELDS, batch_size=1000, stream=True)
    assert Item.objects.count() == 2000  # the two whole batches; the third was mid-COPY
    # Inside the caller's transaction: the batch's savepoint is rolled back, the transaction goes on.
    empty_items()
    with transaction.atomic():
        with pytest.raises(RuntimeError):
            Item.objects.batch_create(failing(), fields=FIELDS, batch_size=1000, stream=True)
        Item.objects.create(sku="after", name="after")
    assert Item.objects.count() == 2001
    # One transaction for the whole call: none of it.
    empty_items()
    with pytest.raises(RuntimeError):
        Item.objects.batch_create(failing(), fields=FIELDS, batch_size=1000, stream=True, atomic=True)
    assert Item.objects.count() == 0


def test_an_unsaved_related_object_read_mid_batch_is_refused_before_it_is_sent():
    owner = Owner.objects.create(name="saved")
    pets = [*(Pet(owner_id=owner.pk, name=f"p{n}") for n in range(300)), Pet(owner=Owner(name="unsaved"), name="bad")]
    with pytest.raises(BulkOperationError) as caught:
        Pet.objects.batch_create(iter(pets), stream=True)
    assert "unsaved related object 'owner'" in str(caught.value.__cause__)
    assert Pet.objects.count() == 0
    result = Pet.objects.batch_create(iter(pets), stream=True, continue_on_error=True)
    assert [(f.start, f.stop) for f in result.failures] == [(300, 301)]
    assert Pet.objects.count() == 300


ROOT = Path(__file__).resolve().parent.parent


def child_env() -> dict[str, str]:
    """A child Django process on this test's database (committed rows: transaction=True)."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.partitionapp.subprocess_settings",
        "SCALEOPS_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "SCALEOPS_TEST_ARCHIVE_DIR": "unused",
    }


# A child process streams 2,500 rows in batches of 1,000; its generator prints how many rows it
# has made and stops at the row named on its command line, where it is killed.
CHILD = """
import sys, time, django
django.setup()
from tests.test_bulk_stream import FIELDS, values
from tests.bulkapp.models import Item
stop = int(sys.argv[1])
def rows():
    for n in range(2500):
        if n == stop:
            print("at", n, flush=True)
            time.sleep(60)
        yield values(n, 1)
Item.objects.batch_create(rows(), fields=FIELDS, batch_size=1000, stream=True)
print("done", flush=True)
"""


@pytest.mark.parametrize(("stop", "kept"), [(30, 0), (64, 0), (700, 0), (999, 0), (1000, 1000), (1700, 1000)])
def test_killed_mid_stream_keeps_whole_batches_only(stop: int, kept: int) -> None:
    # A real SIGKILL with a COPY open (after row 64 of a batch) or between batches: the server
    # keeps the batches that ended, nothing of the one in flight.
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(stop)], cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().split() == ["at", str(stop)]
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert Item.objects.count() == kept
    assert sorted(Item.objects.values_list("sku", flat=True)) == sorted(f"sku-{n}" for n in range(kept))
    # The killed backend's COPY was rolled back and its connection ends: the table takes new rows.
    Item.objects.batch_create((values(n, 2) for n in range(kept, 2500)), fields=FIELDS, stream=True)
    assert Item.objects.count() == 2500


STREAM_CHILD = """
import sys, django
django.setup()
from django.db import connection
from tests.test_bulk_stream import FIELDS, values
from tests.bulkapp.models import Item, Owner
mode = sys.argv[1]
def rows():
    owners = Owner.objects.order_by("pk").iterator(chunk_size=50) if mode == "iterator" else None
    for n in range(300):
        if owners is not None:
            next(owners)
        else:
            Owner.objects.filter(pk=n).exists()
        yield values(n, 1)
try:
    Item.objects.batch_create(rows(), fields=FIELDS, batch_size=200, stream=True)
except Exception as exc:
    print(type(exc).__name__, exc, flush=True)
print("items", Item.objects.count(), "owners", Owner.objects.count(), flush=True)
"""


@pytest.mark.parametrize("mode", ["query", "iterator"])
def test_rows_that_query_the_connection_mid_copy_get_a_clear_error_not_a_hang(mode: str) -> None:
    # An ordinary mistake: the generator reads the database (a lookup, or a queryset iterator
    # that fetches its next rows) while this connection is in COPY. It hung; it must fail fast.
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO bulkapp_owner (name, active) SELECT 'o' || g, true FROM generate_series(1, 400) g")
    command = [sys.executable, "-c", STREAM_CHILD, mode]
    done = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=60)
    first, last = done.stdout.strip().splitlines()[-2:]
    assert first.startswith("RowsQueriedDuringCopy") and "stream=False" in first, done.stdout + done.stderr
    # The batch in flight is rolled back, the connection still answers (the count above ran).
    assert last == "items 0 owners 400"


def test_stream_is_refused_with_workers_and_when_not_a_bool():
    with pytest.raises(ValueError, match="choose one"):
        Item.objects.batch_create([], stream=True, workers=2)
    with pytest.raises(TypeError, match="True or False"):
        Item.objects.batch_create([], stream="yes")


# Runs of rows of one form (where the form changes mid-batch, a streamed batch ends) and a few
# bad rows: -1 breaks the table's CHECK (found by the server at the end of the COPY); 2**31 is
# refused while the COPY runs (by the fast road, then by the prepared road that names it).
RUNS = st.lists(st.tuples(st.sampled_from(["tuple", "dict", "instance"]), st.integers(1, 300)), max_size=4)
BAD = st.dictionaries(st.integers(0, 1199), st.sampled_from([-1, 2**31]), max_size=4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs=RUNS, bad=BAD, batch_size=st.integers(1, 600), atomic=st.booleans())
def test_streamed_writes_and_reports_what_the_plain_road_does(
    runs: Any, bad: dict[int, int], batch_size: int, atomic: bool
) -> None:
    forms = [form for form, length in runs for _ in range(length)]

    def source() -> Any:
        return (as_form(form, n, bad.get(n, n % 50)) for n, form in enumerate(forms))

    outcomes = []
    for stream in (False, True):
        empty_items()
        result = Item.objects.batch_create(
            source(), fields=FIELDS, batch_size=batch_size, continue_on_error=True, atomic=atomic, stream=stream
        )
        failures = [(f.start, f.stop, f.sqlstate) for f in result.failures]
        outcomes.append((failures, result.rows_done, result.rows_seen, result.rolled_back, written()))
    assert outcomes[1] == outcomes[0]
    failures, done, seen, _, rows_written = outcomes[0]
    wrong = sorted(n for n in bad if n < len(forms))
    assert [start for start, _, _ in failures] == wrong and seen == len(forms)
    assert len(rows_written) == done == (0 if atomic and wrong else len(forms) - len(wrong))


def test_returning_and_conflicts_read_the_whole_batch_first():
    # Only a plain COPY streams; the other roads get whole batches and return the same keys.
    first = Item.objects.batch_create((values(n, 1) for n in range(700)), fields=FIELDS, returning=True, stream=True)
    assert first.rows_done == 700 and first.pks == list(Item.objects.order_by("pk").values_list("pk", flat=True))
    again = Item.objects.batch_create(
        (values(n, 3) for n in range(650, 1400)), fields=FIELDS, on_conflict="ignore", batch_size=300, stream=True
    )
    assert (again.rows_seen, again.rows_done, Item.objects.count()) == (750, 700, 1400)
