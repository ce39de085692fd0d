"""Five ways a Django app sends queries, each run the same way in every execution context."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections
from django.db.models import Sum

from tests.monitoringapp.models import Probe

# Django's debug cursor also logs transaction control it did not execute through a cursor
# (psycopg sends it) as these markers; the monitor times statements run through cursors.
TRANSACTION_MARKERS = {"BEGIN", "COMMIT", "ROLLBACK"}


def statement_count(captured: Any) -> int:
    """Queries of a ``CaptureQueriesContext`` that are statements, not transaction markers."""
    return sum(1 for query in captured.captured_queries if query["sql"] not in TRANSACTION_MARKERS)


def _raw_sql(alias: str) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT %s::int + 1", [41])
        cursor.fetchone()
        cursor.executemany(
            "INSERT INTO monitoringapp_probe (name, value) VALUES (%s, %s)", [("many", 1), ("many", 2), ("many", 3)]
        )


def run_query_styles(alias: str = "default") -> None:
    manager = Probe.objects.using(alias)
    # 1. ORM writes
    probe = manager.create(name="style", value=1)
    manager.filter(pk=probe.pk).update(value=2)
    # 2. ORM reads and aggregates
    list(manager.filter(value__gte=0)[:10])
    manager.aggregate(total=Sum("value"))
    # 3. raw cursor SQL and executemany
    _raw_sql(alias)
    # 4. Manager.raw()
    list(manager.raw("SELECT id, name, value FROM monitoringapp_probe WHERE value > %s LIMIT 5", [0]))
    # 5. bulk_create and delete
    manager.bulk_create([Probe(name="bulk", value=i) for i in range(5)])
    manager.filter(name="bulk").delete()


async def arun_query_styles(alias: str = "default") -> None:
    manager = Probe.objects.using(alias)
    probe = await manager.acreate(name="style", value=1)
    await manager.filter(pk=probe.pk).aupdate(value=2)
    [p async for p in manager.filter(value__gte=0)[:10]]
    await manager.aaggregate(total=Sum("value"))
    await sync_to_async(_raw_sql)(alias)
    await sync_to_async(
        lambda: list(manager.raw("SELECT id, name, value FROM monitoringapp_probe WHERE value > %s LIMIT 5", [0]))
    )()
    await manager.abulk_create([Probe(name="bulk", value=i) for i in range(5)])
    await manager.filter(name="bulk").adelete()
