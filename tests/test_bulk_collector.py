"""Bulk calls keep the collector off the objects that were there before them, and give them back.

``gc.freeze()`` is process-wide: whatever happens in the call (an error, another thread's call,
a freeze of the application's own), the process must end up as it was.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from django_scaleops.bulk import BulkOperationError
from tests.bulkapp.models import Item

pytestmark = pytest.mark.django_db(transaction=True)


def rows(count: int, seen: list[int], fail_at: int | None = None, prefix: str = "sku") -> Iterator[dict[str, Any]]:
    for n in range(count):
        seen.append(gc.get_freeze_count())  # what the collector has frozen while rows are read
        if n == fail_at:
            raise ValueError("the iterable's own error")
        yield {"sku": f"{prefix}-{n}", "name": "x", "quantity": n}


@pytest.fixture(autouse=True)
def nothing_frozen() -> Iterator[None]:
    assert gc.get_freeze_count() == 0
    yield
    assert gc.get_freeze_count() == 0, "a bulk call left objects frozen"


@pytest.mark.parametrize("options", [{}, {"stream": True}, {"atomic": True}, {"workers": 2}])
def test_objects_made_before_the_call_are_frozen_while_it_runs(options: dict[str, Any]):
    seen: list[int] = []
    before = len(gc.get_objects())
    Item.objects.batch_create(rows(300, seen), batch_size=100, **options)
    assert Item.objects.count() == 300
    assert min(seen) >= before * 0.9  # about everything the process held before the call
    assert gc.get_freeze_count() == 0


def test_an_error_in_the_call_unfreezes():
    seen: list[int] = []
    with pytest.raises(ValueError, match="own error"):
        Item.objects.batch_create(rows(300, seen, fail_at=150), batch_size=100)
    assert seen and min(seen) > 0
    Item.objects.batch_create([{"sku": "dup", "name": "x", "quantity": 1}])
    with pytest.raises(BulkOperationError):
        Item.objects.batch_create([{"sku": "dup", "name": "x", "quantity": 1}], bisect=False)


def test_a_freeze_of_the_applications_own_is_left_as_it_is():
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        seen: list[int] = []
        Item.objects.batch_create(rows(50, seen), batch_size=10)
        # Neither thawed nor grown by the call (frozen objects freed by their refcount leave it).
        assert all(frozen * 0.9 < count <= frozen for count in [*seen, gc.get_freeze_count()])
    finally:
        gc.unfreeze()


def test_nothing_is_frozen_when_turned_off_or_when_the_collector_is_off():
    seen: list[int] = []
    with override_settings(SCALEOPS_BULK_FREEZE_GC=False):
        Item.objects.batch_create(rows(50, seen), batch_size=10)
    gc.disable()
    try:
        Item.objects.batch_create(rows(50, seen, prefix="off"), batch_size=10)
    finally:
        gc.enable()
    assert set(seen) == {0}


def test_calls_on_two_threads_unfreeze_once_both_have_ended():
    started = threading.Barrier(2)
    finish = threading.Event()
    errors: list[BaseException] = []
    seen: list[int] = []

    def slow_rows(prefix: str) -> Iterator[dict[str, Any]]:
        started.wait(timeout=30)
        for n in range(20):
            seen.append(gc.get_freeze_count())
            if prefix == "b" and n == 10:
                finish.wait(timeout=30)  # b is still reading after a has ended
            yield {"sku": f"{prefix}-{n}", "name": "x", "quantity": n}

    def call(prefix: str) -> None:
        try:
            Item.objects.batch_create(slow_rows(prefix), batch_size=5)
        except BaseException as exc:
            errors.append(exc)
        finally:
            from django.db import connection

            connection.close()

    b = threading.Thread(target=call, args=("b",))
    b.start()
    call_a = threading.Thread(target=call, args=("a",))
    call_a.start()
    call_a.join(timeout=60)
    assert gc.get_freeze_count() > 0  # b still runs: still frozen
    finish.set()
    b.join(timeout=60)
    assert not errors
    assert Item.objects.count() == 40
    assert min(seen) > 0
