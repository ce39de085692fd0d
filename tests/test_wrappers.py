"""The execute-wrapper chain: one owner, one stated order, and statements beside Django's cursor too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, connections
from django.test import override_settings

from django_scaleops import wrappers
from django_scaleops.apm import state as apm_state
from django_scaleops.apm.tracing import traced_execute
from django_scaleops.cache.invalidation import execute_wrapper as invalidate_writes
from django_scaleops.monitoring.monitor import monitor
from django_scaleops.replicas.failover import retry_elsewhere, track_writes
from tests.cacheapp.helpers import clean_cache, stamp  # noqa: F401
from tests.router_helpers import fresh_routing, router_settings

pytestmark = [pytest.mark.django_db(transaction=True, databases=["default", "replica"])]

OURS = (monitor, traced_execute, track_writes, retry_elsewhere, invalidate_writes)


def ours(alias: str = "default") -> list[Any]:
    return [w for w in connections[alias].execute_wrappers if w in OURS]


@pytest.fixture
def apm_tracing() -> Iterator[None]:
    """Our SQL spans switched on (as setup_apm does once a vendor starts)."""
    before = apm_state.request_tracing
    apm_state.request_tracing = True
    wrappers.install_everywhere()
    yield
    apm_state.request_tracing = before
    wrappers.install_everywhere()


def test_every_wrapper_in_the_stated_order(apm_tracing):
    with override_settings(SCALEOPS_MONITOR_ENABLED=True), router_settings(), fresh_routing():
        connection.ensure_connection()
        connections["default"].cursor().close()  # the router starts routing
        wrappers.install_everywhere()
        assert ours("default") == [monitor, traced_execute, track_writes, invalidate_writes]
        connections["replica"].ensure_connection()
        wrappers.install_everywhere()
        assert ours("replica") == [monitor, traced_execute, retry_elsewhere, invalidate_writes]
    assert ours("default") == [traced_execute, invalidate_writes]


def test_switched_off_capabilities_leave_no_wrapper():
    with override_settings(SCALEOPS_CACHE_ENABLED=False, SCALEOPS_MONITOR_ENABLED=False):
        connection.ensure_connection()
        assert ours() == []
        connection.close()
        connection.ensure_connection()  # connection_created: the same answer
        assert ours() == []
    assert ours() == [invalidate_writes]


def test_the_applications_own_wrappers_stay_inside_ours_and_pop_cleanly():
    seen: list[str] = []

    def mine(execute: Any, sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    connection.ensure_connection()
    with connection.execute_wrapper(mine):
        with override_settings(SCALEOPS_MONITOR_ENABLED=True):  # re-installs while mine is on
            assert connection.execute_wrappers[-1] is mine
            assert connection.execute_wrappers[0] is monitor
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        assert connection.execute_wrappers[-1] is mine
    assert mine not in connection.execute_wrappers
    assert seen == ["SELECT 1"]


@pytest.mark.usefixtures("clean_cache")
def test_a_statement_beside_the_cursor_goes_through_the_chain():
    """What the bulk operations' COPY uses: counted by the monitor, invalidated like a write."""
    from tests.cacheapp.models import Doc

    Doc.objects.all().cached(60)
    before = stamp("cacheapp_doc")
    with override_settings(SCALEOPS_MONITOR_ENABLED=True):
        monitor.reset()
        with connection.cursor() as cursor:
            done = wrappers.run_through_chain(
                connection, cursor, 'COPY "cacheapp_doc" ("title") FROM STDIN', lambda: "copied"
            )
        assert done == "copied"
        counted = monitor.snapshot().aliases["default"].count
        assert counted >= 1
    assert stamp("cacheapp_doc") != before


@pytest.mark.usefixtures("clean_cache")
def test_batch_creates_copy_is_counted_by_the_monitor_and_invalidates():
    from django_scaleops.signals import bulk_rows_written
    from tests.cacheapp.models import Doc

    Doc.objects.all().cached(60)
    before = stamp("cacheapp_doc")
    # Without the bulk signal's receiver, only the chain can invalidate for the COPY.
    bulk_rows_written.disconnect(dispatch_uid="scaleops-cache-bulk")
    try:
        with override_settings(SCALEOPS_MONITOR_ENABLED=True):
            monitor.reset()
            Doc.objects.batch_create([{"title": "copied"}])
            statements = monitor.snapshot().fingerprint_text.values()
            assert any(str(text).startswith("COPY") for text in statements), list(statements)
    finally:
        from django_scaleops.cache.invalidation import on_bulk_rows_written

        bulk_rows_written.connect(on_bulk_rows_written, dispatch_uid="scaleops-cache-bulk")
    assert stamp("cacheapp_doc") != before
    assert [d.title for d in Doc.objects.all().cached(60)] == ["copied"]
