"""Bounded memory: a generator of a million rows goes in by COPY without being materialised."""

from __future__ import annotations

import datetime as dt
import tracemalloc

import pytest
from django.db import connection

from tests.bulkapp.models import PARTITIONED_DDL, Event

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = 1_000_000
MIB = 1024 * 1024


@pytest.fixture
def events():
    with connection.cursor() as cursor:
        cursor.execute(PARTITIONED_DDL)
    yield Event
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE bulkapp_event")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_million_rows_from_a_generator_with_flat_memory(events, workers):
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    step = dt.timedelta(seconds=30)

    def rows():
        for n in range(ROWS):
            yield (base + step * n, "load", n)  # spans both yearly partitions

    tracemalloc.start()
    try:
        result = Event.objects.batch_create(
            rows(), fields=["created_at", "kind", "amount"], batch_size=5000, workers=workers
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.ok and result.rows_done == ROWS and result.batches_committed == ROWS // 5000
    # A million tuples held at once would take well over 100 MiB; a batch of 5,000 a few MiB (with
    # workers: one batch being written and one waiting per worker, one being read).
    assert peak < 20 * MIB, f"peak traced memory {peak / MIB:.1f} MiB"
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), min(amount), max(amount) FROM bulkapp_event")
        assert cursor.fetchone() == (ROWS, 0, ROWS - 1)
