"""Bulk operations vs Django's own: batch_create / bulk_create, batch_update / bulk_update,
batch_delete / QuerySet.delete() (with and without a post_delete receiver). Run with ``make bench``.

Rows/s come from alternating rounds in this process (medians printed by the harness). Peak memory
comes from one fresh subprocess per operation: the growth of its peak RSS (VmHWM) over the
RSS it had just before the operation (the kernel's peak mark is reset there), so nothing else
in this process blurs it.

The issue's goals speak of 1M rows; on a 2-core machine Django's peers would need minutes per
round at that size, so the timed rounds use the scale printed at the start (set BENCH_BULK_ROWS to
change it) and the flat-memory claim is checked on 1M generated rows by the probe.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from benchmarks.harness import compare, own_database

ROWS = int(os.environ.get("BENCH_BULK_ROWS", "20000"))
UPDATE_ROWS = int(os.environ.get("BENCH_BULK_UPDATE_ROWS", "5000"))
DELETE_ROWS = int(os.environ.get("BENCH_BULK_DELETE_ROWS", "50000"))
PROBE_ROWS = int(os.environ.get("BENCH_BULK_PROBE_ROWS", "1000000"))
ROUNDS = int(os.environ.get("BENCH_BULK_ROUNDS", "3"))
# BENCH_BULK_ONLY=create runs only the create comparisons (no update, delete or memory probes);
# BENCH_BULK_ONLY=workers only the two with workers.
ONLY = os.environ.get("BENCH_BULK_ONLY", "")
CREATE_BATCH = 5000  # ours, for the generator and tuple rounds; the pre-built round uses the default 1,000
# batch_create(workers=WORKERS): batches COPY'd on worker connections while this thread reads the next.
WORKERS = int(os.environ.get("BENCH_BULK_WORKERS", "2"))
FIELDS = ["sku", "name", "quantity", "price", "tags", "created_at"]
NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
MIB = 1024 * 1024


@contextlib.contextmanager
def replica_paused() -> Iterator[None]:
    """Stop the harness's streaming replica for the timed rounds, then start it again.

    On this 2-core machine the replica replays every inserted row on the same cores as the primary
    and the client (1.5-2 µs of CPU a row), which production spends on another machine. Both
    sides are timed without it; services given by URL are left as they are.
    """
    from django_scaleops.testing.services import SERVICES_DIR_VAR, Services

    root = os.environ.get(SERVICES_DIR_VAR)
    replica = Services.attach(root).replica if root else None
    if replica is None:
        print("services given by URL: the replica (if any) keeps running")
        yield
        return
    print("the harness's streaming replica is stopped during the timed rounds (it shares these 2 cores)")
    replica.stop()
    try:
        yield
    finally:
        replica.start()


def setup() -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", run_syncdb=True, interactive=False, verbosity=0)


def truncate() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE bulkapp_item RESTART IDENTITY")


def tuples(count: int, start: int = 0) -> Any:
    for n in range(start, start + count):
        yield (f"sku-{n}", f"item {n}", n % 50, Decimal("1.50"), ["a"], NOW)


def instances(count: int) -> Any:
    from tests.bulkapp.models import Item

    return (Item(**dict(zip(FIELDS, row, strict=True))) for row in tuples(count))


def fill(count: int) -> None:
    from tests.bulkapp.models import Item

    truncate()
    Item.objects.batch_create(tuples(count), fields=FIELDS, batch_size=10_000)


def timed(fn: Any, rows: int) -> float:
    began = time.perf_counter()
    fn()
    return rows / (time.perf_counter() - began)


# ---- one operation per round


def ours_create_instances() -> float:
    from tests.bulkapp.models import Item

    truncate()
    return timed(lambda: Item.objects.batch_create(instances(ROWS), batch_size=CREATE_BATCH), ROWS)


def ours_create_tuples(workers: int = 1) -> float:
    from tests.bulkapp.models import Item

    truncate()
    return timed(
        lambda: Item.objects.batch_create(tuples(ROWS), fields=FIELDS, batch_size=CREATE_BATCH, workers=workers), ROWS
    )


def ours_create_dicts(workers: int = 1) -> float:
    from tests.bulkapp.models import Item

    truncate()
    rows = (dict(zip(FIELDS, row, strict=True)) for row in tuples(ROWS))
    return timed(lambda: Item.objects.batch_create(rows, batch_size=CREATE_BATCH, workers=workers), ROWS)


def peer_create() -> float:
    from tests.bulkapp.models import Item

    truncate()
    return timed(lambda: Item.objects.bulk_create(list(instances(ROWS)), batch_size=1000), ROWS)


def construction_only() -> float:
    """Only build the round's instances (no write): no writer given this generator can beat it."""
    return timed(lambda: deque(instances(ROWS), maxlen=0), ROWS)


def raw_copy_tuples() -> float:
    """psycopg's binary COPY of the same tuples straight from the generator, CREATE_BATCH rows a
    transaction, with batch_create's jsonb dumper and nothing checked: what the server and the
    dumpers take for these rows, whatever sends them."""
    from django.db import connection, transaction

    from django_scaleops.bulk.columns import use_compact_json

    truncate()
    columns = [*FIELDS, "updated_at"]
    sql = f"COPY bulkapp_item ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    types = ["varchar", "varchar", "int4", "numeric", "jsonb", "timestamptz", "timestamptz"]

    def copy() -> None:
        rows = tuples(ROWS)
        for _ in range(0, ROWS, CREATE_BATCH):
            with transaction.atomic(), connection.cursor() as wrapper:
                use_compact_json(wrapper.cursor)
                with wrapper.cursor.copy(sql) as copy:
                    copy.set_types(types)
                    now = dt.datetime.now(dt.UTC)
                    for row in islice(rows, CREATE_BATCH):
                        copy.write_row((*row, now))

    return timed(copy, ROWS)


def prebuilt_round(ours: bool) -> float:
    """Only the write: the instances are built before the clock starts, for both."""
    from tests.bulkapp.models import Item

    truncate()
    objs = list(instances(ROWS))
    # The full collection that building set off belongs to the building: settle it before the
    # clock starts (for both), or it lands inside whichever write comes first.
    gc.collect()
    if ours:
        return timed(lambda: Item.objects.batch_create(objs), ROWS)
    return timed(lambda: Item.objects.bulk_create(objs, batch_size=1000), ROWS)


def update_round(ours: bool) -> float:
    from tests.bulkapp.models import Item

    objs = list(Item.objects.order_by("pk")[:UPDATE_ROWS])
    stamp = time.perf_counter_ns()
    for obj in objs:
        obj.name, obj.quantity, obj.price = f"n{stamp}", stamp % 50, Decimal(stamp % 1000) / 100
    fields = ["name", "quantity", "price"]
    if ours:
        return timed(lambda: Item.objects.batch_update(objs, fields), len(objs))
    return timed(lambda: Item.objects.bulk_update(objs, fields, batch_size=1000), len(objs))


batch_ms: list[float] = []


def on_delete(**kwargs: Any) -> None:
    pass


def delete_round(ours: bool, receiver: bool) -> float:
    from django.db.models.signals import post_delete

    from tests.bulkapp.models import Item

    fill(DELETE_ROWS)
    last = [time.perf_counter()]

    def progress(_: Any) -> None:
        now = time.perf_counter()
        batch_ms.append((now - last[0]) * 1000)
        last[0] = now

    if receiver:
        post_delete.connect(on_delete, sender=Item)
    try:
        if ours:
            progress_fn = None if receiver else progress
            return timed(lambda: Item.objects.all().batch_delete(batch_size=5000, progress=progress_fn), DELETE_ROWS)
        return timed(lambda: Item.objects.all().delete(), DELETE_ROWS)
    finally:
        post_delete.disconnect(on_delete, sender=Item)


# ---- memory probes, each in a fresh process


def status_kib(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS and return that, in bytes."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return status_kib("VmRSS") * 1024


def probe(name: str) -> dict[str, float]:
    """Run one operation; report rows/s and the growth of peak RSS over RSS just before it."""
    from django.db.models.signals import post_delete

    from tests.bulkapp.models import Item

    # A million instances take a minute to construct here; the generator claim is shown on tuples.
    rows = {
        "ours_create_tuples": PROBE_ROWS,
        "ours_create_tuples_workers": PROBE_ROWS,
        "ours_create_instances": min(PROBE_ROWS, 100_000),
    }.get(name, ROWS)
    if "delete" in name:
        rows = DELETE_ROWS
        fill(rows)
    else:
        truncate()
    if name.endswith("_receiver"):
        post_delete.connect(on_delete, sender=Item)
    operations = {
        "ours_create_tuples": lambda: Item.objects.batch_create(tuples(rows), fields=FIELDS, batch_size=5000),
        "ours_create_tuples_workers": lambda: Item.objects.batch_create(
            tuples(rows), fields=FIELDS, batch_size=5000, workers=WORKERS
        ),
        "ours_create_instances": lambda: Item.objects.batch_create(instances(rows), batch_size=5000),
        "peer_create": lambda: Item.objects.bulk_create(list(instances(rows)), batch_size=1000),
        "ours_delete": lambda: Item.objects.all().batch_delete(batch_size=5000),
        "ours_delete_receiver": lambda: Item.objects.all().batch_delete(batch_size=5000),
        "peer_delete": lambda: Item.objects.all().delete(),
        "peer_delete_receiver": lambda: Item.objects.all().delete(),
    }
    before = reset_peak_rss()
    speed = timed(operations[name], rows)
    peak = status_kib("VmHWM") * 1024
    return {"rows": rows, "rows_per_s": speed, "peak_mib": max(peak - before, 0) / MIB}


def run_probe(name: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--probe", name], capture_output=True, text=True, check=True, env=os.environ
    )
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    setup()
    with replica_paused():
        comparisons()


def worker_comparisons() -> None:
    for form, ours in (("tuples", ours_create_tuples), ("dicts", ours_create_dicts)):
        compare(
            f"batch_create(batch_size={CREATE_BATCH}, workers={WORKERS}) vs bulk_create(batch_size=1000),"
            f" {ROWS:,} {form}",
            functools.partial(ours, WORKERS),
            peer_create,
            rounds=ROUNDS,
            unit="rows/s",
            ours_name=f"batch_create({form}, workers={WORKERS})",
            peer_name="bulk_create",
        )


def comparisons() -> None:
    print(
        f"bulk benchmark: create {ROWS:,} rows, update {UPDATE_ROWS:,} rows x 3 fields, delete {DELETE_ROWS:,} rows,"
        f" {ROUNDS} alternating rounds; memory probes: ours create {PROBE_ROWS:,} generated tuples"
        f" and {min(PROBE_ROWS, 100_000):,} generated instances, peer create {ROWS:,} instances in a list"
    )
    if ONLY == "workers":
        worker_comparisons()
        truncate()
        return
    compare(
        f"batch_create(batch_size={CREATE_BATCH}) vs bulk_create(batch_size=1000), {ROWS:,} model instances"
        " built in the round (a generator for ours, a list for the peer)",
        ours_create_instances,
        peer_create,
        rounds=ROUNDS,
        unit="rows/s",
        ours_name="batch_create(instances)",
        peer_name="bulk_create",
    )
    compare(
        f"batch_create(default batch_size) vs bulk_create(batch_size=1000), {ROWS:,} instances"
        " built before the clock starts",
        lambda: prebuilt_round(True),
        lambda: prebuilt_round(False),
        rounds=ROUNDS,
        unit="rows/s",
        ours_name="batch_create(list)",
        peer_name="bulk_create",
    )
    compare(
        f"batch_create(batch_size={CREATE_BATCH}) vs bulk_create(batch_size=1000), {ROWS:,} tuples"
        " (the peer builds instances from them)",
        ours_create_tuples,
        peer_create,
        rounds=ROUNDS,
        unit="rows/s",
        ours_name="batch_create(tuples)",
        peer_name="bulk_create",
    )
    compare(
        f"batch_create(batch_size={CREATE_BATCH}) vs bulk_create(batch_size=1000), {ROWS:,} dicts"
        " (the peer builds instances from the same tuples)",
        ours_create_dicts,
        peer_create,
        rounds=ROUNDS,
        unit="rows/s",
        ours_name="batch_create(dicts)",
        peer_name="bulk_create",
    )
    worker_comparisons()
    # Ceilings on this machine, against the same peer: building the instances alone, and a raw
    # psycopg COPY of the same tuples (what any COPY writer pays the server and the dumpers).
    compare(
        f"ceiling for the first comparison: building {ROWS:,} instances alone (no write) vs bulk_create",
        construction_only,
        peer_create,
        rounds=ROUNDS,
        unit="rows/s",
        ours_name="instances only",
        peer_name="bulk_create",
    )
    compare(
        f"ceiling for the tuple comparison: raw psycopg binary COPY of the same {ROWS:,} tuples from the"
        f" generator ({CREATE_BATCH} a transaction, nothing checked) vs bulk_create",
        raw_copy_tuples,
        peer_create,
        rounds=ROUNDS,
        unit="rows/s",
        ours_name="raw psycopg COPY",
        peer_name="bulk_create",
    )
    if ONLY == "create":
        truncate()
        return
    fill(max(UPDATE_ROWS, 1))
    compare(
        f"batch_update vs bulk_update(batch_size=1000), {UPDATE_ROWS:,} rows x 3 fields",
        lambda: update_round(True),
        lambda: update_round(False),
        rounds=ROUNDS,
        unit="rows/s",
        ours_name="batch_update",
        peer_name="bulk_update",
    )
    compare(
        f"batch_delete(batch_size=5000) vs QuerySet.delete() (one statement), {DELETE_ROWS:,} rows, no receiver",
        lambda: delete_round(True, False),
        lambda: delete_round(False, False),
        rounds=ROUNDS,
        unit="rows/s",
        ours_name="batch_delete",
        peer_name="QuerySet.delete()",
    )
    print(
        f"  batch_delete transaction length per 5,000-row batch: median {statistics.median(batch_ms):.1f} ms,"
        f" max {max(batch_ms):.1f} ms ({len(batch_ms)} batches)"
    )
    compare(
        f"batch_delete(batch_size=5000) vs QuerySet.delete(), {DELETE_ROWS:,} rows, both with a post_delete receiver",
        lambda: delete_round(True, True),
        lambda: delete_round(False, True),
        rounds=ROUNDS,
        unit="rows/s",
        ours_name="batch_delete (collector)",
        peer_name="QuerySet.delete()",
    )
    print("\nPeak memory, one fresh process per operation (growth of peak RSS over RSS just before it)")
    for name in [
        "ours_create_tuples",
        "ours_create_tuples_workers",
        "ours_create_instances",
        "peer_create",
        "ours_delete",
        "peer_delete",
        "ours_delete_receiver",
        "peer_delete_receiver",
    ]:
        figures = run_probe(name)
        print(
            f"  {name:<28} {figures['rows']:>10,.0f} rows  {figures['rows_per_s']:>10,.0f} rows/s"
            f"  peak +{figures['peak_mib']:.1f} MiB"
        )
    truncate()


if __name__ == "__main__":
    own_database("bulk")
    if sys.argv[1:2] == ["--probe"]:
        setup()
        print(json.dumps(probe(sys.argv[2])))
    else:
        main()
