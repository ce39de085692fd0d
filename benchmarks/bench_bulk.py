"""Bulk operations vs Django's own: batch_create / bulk_create, batch_update / bulk_update,
batch_delete / QuerySet.delete() (with and without a post_delete receiver). Run with ``make bench``.

The headline is the example project's own ``chat.Message``: partitioned by month, a two-column
primary key, secondary indexes and a foreign key to its sender, as a real table is. Its
rounds run in a subprocess under ``example_project.settings`` (:class:`MessageRounds`), with the
partitions of the generated months created first; the comparisons and their results stay here.
The index-free ``bulkapp_item`` (tests.settings) follows: what the client side costs when the
server has little to do.

Rows/s come from alternating rounds (medians printed by the harness). Peak memory comes from one
fresh subprocess per operation: the growth of its peak RSS (VmHWM) over the RSS it had just
before the operation (the kernel's peak mark is reset there), so nothing else in this process
blurs it (under ``make bench-smoke``, which judges no figure, the probes share one subprocess).

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
import logging
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

from benchmarks.harness import ROOT, SMOKE, compare, own_database, record, sized

ROWS = sized(int(os.environ.get("BENCH_BULK_ROWS", "20000")), 300)
MESSAGE_ROWS = sized(int(os.environ.get("BENCH_BULK_MESSAGE_ROWS", "50000")), 300)
UPDATE_ROWS = sized(int(os.environ.get("BENCH_BULK_UPDATE_ROWS", "5000")), 200)
DELETE_ROWS = sized(int(os.environ.get("BENCH_BULK_DELETE_ROWS", "50000")), 300)
PROBE_ROWS = sized(int(os.environ.get("BENCH_BULK_PROBE_ROWS", "1000000")), 1000)
ROUNDS = int(os.environ.get("BENCH_BULK_ROUNDS", "3"))
# BENCH_BULK_ONLY=messages runs only the chat.Message comparisons; =create only the create
# comparisons (no update, delete or memory probes); =workers only the two with workers.
ONLY = os.environ.get("BENCH_BULK_ONLY", "")
CREATE_BATCH = 5000  # ours, for the generator and tuple rounds; the pre-built round uses the default 1,000
# batch_create(workers=WORKERS): batches COPY'd on worker connections while this thread reads the next.
WORKERS = int(os.environ.get("BENCH_BULK_WORKERS", "2"))
FIELDS = ["sku", "name", "quantity", "price", "tags", "created_at"]
NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
MIB = 1024 * 1024

# chat.Message rows: a sender among SENDERS users, a body of 20-110 characters, created_at rising
# over MESSAGE_SPAN from MESSAGE_FIRST (four monthly partitions), as messages arrive.
MESSAGE_FIELDS = ["sender_id", "body", "created_at"]
MESSAGE_FIRST = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
MESSAGE_SPAN = dt.timedelta(days=100)
SENDERS = 200
UNINDEXED = "bench_message_unindexed"
INDEXED = "bench_message_indexed"
MESSAGE_SETTINGS = "example_project.settings"


@contextlib.contextmanager
def replica_paused() -> Iterator[None]:
    """Stop the harness's streaming replica for the timed rounds, then start it again.

    On this 2-core machine the replica replays every inserted row on the same cores as the primary
    and the client (1.5-2 µs of CPU a row), which production spends on another machine. Both
    sides are timed without it; services given by URL are left as they are.
    """
    from django_scaleops.testing.services import SERVICES_DIR_VAR, Services

    root = os.environ.get(SERVICES_DIR_VAR)
    services = Services.attach(root) if root else None
    if services is None:
        print("services given by URL: the replica (if any) keeps running")
        yield
        return
    print("the harness's streaming replica is stopped during the timed rounds (it shares these 2 cores)")
    services.replica.stop()
    try:
        yield
    finally:
        # The rounds may write more WAL than the primary keeps for a stopped standby (with
        # BENCH_BULK_ROUNDS=7 they did): a fresh copy, not a standby that never catches up.
        services.reseed_replica()


def setup(*, migrate: bool = True) -> None:
    import django
    from django.core.management import call_command

    django.setup()
    if migrate:  # a probe's parent has migrated the database already
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


# ---- chat.Message: rounds run in a subprocess under the example project's settings


def message_setup() -> list[int]:
    """Migrate the example's tables, create the partitions of the generated months, an unindexed
    copy of the table and the senders; returns the senders' ids."""
    import django
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    django.setup()
    # Every 5,000-row COPY and 1,000-row INSERT here passes the example's 100 ms slow-query mark:
    # the lines would bury the figures.
    logging.getLogger("django_scaleops.monitoring.slow").setLevel(logging.ERROR)
    call_command("migrate", interactive=False, verbosity=0)
    with open(os.devnull, "w") as quiet:
        call_command(
            "ensure_partitions",
            model=["chat.Message"],
            since=MESSAGE_FIRST.isoformat(),
            now=(MESSAGE_FIRST + MESSAGE_SPAN).isoformat(),
            stdout=quiet,
        )
    with connection.cursor() as cursor:
        # Plain copies of the table: with its indexes (no partitions, no foreign key), and with
        # nothing but its columns, defaults and row triggers (chat.Message's id may be given by
        # one): what the server's own work for a row is when only the heap and WAL are written.
        cursor.execute(f"DROP TABLE IF EXISTS {UNINDEXED}, {INDEXED}")
        like = "LIKE chat_message INCLUDING DEFAULTS INCLUDING IDENTITY"
        cursor.execute(f"CREATE TABLE {UNINDEXED} ({like})")
        cursor.execute(f"CREATE TABLE {INDEXED} ({like} INCLUDING INDEXES)")
        cursor.execute(
            "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'chat_message'::regclass"
            " AND NOT tgisinternal"
        )
        for (definition,) in cursor.fetchall():
            for copy in (UNINDEXED, INDEXED):
                cursor.execute(definition.replace(" ON public.chat_message ", f" ON {copy} "))
    User = get_user_model()
    users = User.objects.using("default").bulk_create(User(username=f"sender{n}") for n in range(SENDERS))
    return [user.pk for user in users]


def message_tuples(count: int, senders: list[int]) -> Iterator[tuple[Any, ...]]:
    step = MESSAGE_SPAN / max(count, 1)
    for n in range(count):
        yield senders[n % len(senders)], f"message {n}: " + "lorem ipsum " * (1 + n % 8), MESSAGE_FIRST + n * step


def message_instances(count: int, senders: list[int]) -> Iterator[Any]:
    from example_project.chat.models import Message

    return (
        Message(sender_id=sender, body=body, created_at=created_at)
        for sender, body, created_at in message_tuples(count, senders)
    )


def message_truncate(table: str = "chat_message") -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {table} RESTART IDENTITY CASCADE")


def message_raw_copy(senders: list[int], table: str = "chat_message", *, instances: bool = False) -> float:
    """psycopg's binary COPY of the tuple round's rows, straight from the generator, CREATE_BATCH
    rows a COPY (each its own transaction), into ``table``: the columns and fill-in values
    batch_create writes for them (whatever the model's defaults are), nothing checked.

    ``instances``: from the instance round's generator instead, the values read from each
    instance's attributes while the COPY runs: what any writer given that generator could reach.
    """
    from operator import attrgetter

    from django.db import connection

    from django_scaleops.bulk.columns import table_columns
    from django_scaleops.bulk.reading import RowForms
    from example_project.chat.models import Message

    message_truncate(table)
    forms = RowForms(Message, MESSAGE_FIELDS, encode_json=False)
    form = forms.tuples
    assert form is not None
    if instances:  # the fields batch_create writes for these instances
        form = forms.of(next(message_instances(1, senders)))  # type: ignore[assignment]
    catalog = table_columns(connection, "chat_message")
    types = [catalog[column].oid for column in form.columns]
    sql = f"COPY {table} ({', '.join(form.columns)}) FROM STDIN (FORMAT BINARY)"
    read = attrgetter(*(f.attname for f in form.fields))

    def copy() -> None:
        connection.ensure_connection()
        with connection.connection.cursor() as cursor:
            if instances:
                objs = message_instances(MESSAGE_ROWS, senders)
                while (first := next(objs, None)) is not None:
                    with cursor.copy(sql) as copy:
                        copy.set_types(types)
                        copy.write_row(read(first))
                        for obj in islice(objs, CREATE_BATCH - 1):
                            copy.write_row(read(obj))
                return
            rows = message_tuples(MESSAGE_ROWS, senders)
            while batch := list(islice(rows, CREATE_BATCH)):
                with cursor.copy(sql) as copy:
                    copy.set_types(types)
                    for row in form.read_values()(batch):
                        copy.write_row(row)

    return timed(copy, MESSAGE_ROWS)


class CpuTimes:
    """Client and server CPU per row of each round (the server's: the backend of this process's
    connection, read from /proc when PostgreSQL runs on this machine); wall time includes waiting."""

    def __init__(self) -> None:
        self.per_row: dict[str, list[tuple[float, float | None]]] = {}

    @staticmethod
    def backend_seconds() -> float | None:
        from django.db import connection

        connection.ensure_connection()
        try:
            with open(f"/proc/{connection.connection.info.backend_pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # a server elsewhere
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def measure(self, name: str, run: Any) -> float:
        server, client = self.backend_seconds(), time.process_time()
        speed: float = run()
        client = time.process_time() - client
        after = self.backend_seconds()
        # Workers write on connections of their own, whose backends this does not see.
        server = None if server is None or after is None or "workers" in name else after - server
        rows = MESSAGE_ROWS / 1e6
        self.per_row.setdefault(name, []).append((client / rows, None if server is None else server / rows))
        return speed

    def medians(self) -> dict[str, dict[str, float | None]]:
        figures: dict[str, dict[str, float | None]] = {}
        for name, samples in self.per_row.items():
            servers = [s for _, s in samples if s is not None]
            figures[name] = {
                "client": statistics.median(c for c, _ in samples),
                "server": statistics.median(servers) if servers else None,
            }
        return figures


def message_rounds(senders: list[int]) -> dict[str, Any]:
    from example_project.chat.models import Message

    def ours_instances(stream: bool = False) -> float:
        message_truncate()
        rows = message_instances(MESSAGE_ROWS, senders)
        return timed(lambda: Message.objects.batch_create(rows, batch_size=CREATE_BATCH, stream=stream), MESSAGE_ROWS)

    def ours_tuples() -> float:
        message_truncate()
        rows = message_tuples(MESSAGE_ROWS, senders)
        return timed(
            lambda: Message.objects.batch_create(rows, fields=MESSAGE_FIELDS, batch_size=CREATE_BATCH), MESSAGE_ROWS
        )

    def peer_instances() -> float:
        message_truncate()
        return timed(
            lambda: Message.objects.bulk_create(list(message_instances(MESSAGE_ROWS, senders)), batch_size=1000),
            MESSAGE_ROWS,
        )

    def ours_instances_workers() -> float:
        message_truncate()
        rows = message_instances(MESSAGE_ROWS, senders)
        return timed(lambda: Message.objects.batch_create(rows, batch_size=CREATE_BATCH, workers=WORKERS), MESSAGE_ROWS)

    def ours_instances_unfrozen() -> float:
        # stream=True with the collector as the process has it (django_scaleops/bulk/collector.py).
        from django.test import override_settings

        with override_settings(SCALEOPS_BULK_FREEZE_GC=False):
            return ours_instances(stream=True)

    return {
        "ours_instances": ours_instances,
        "ours_instances_streamed": functools.partial(ours_instances, stream=True),
        "ours_instances_streamed_unfrozen": ours_instances_unfrozen,
        "ours_instances_workers": ours_instances_workers,
        "ours_tuples": ours_tuples,
        "peer_instances": peer_instances,
        "raw_copy": lambda: message_raw_copy(senders),
        "raw_copy_instances": lambda: message_raw_copy(senders, instances=True),
        "raw_copy_indexed": lambda: message_raw_copy(senders, INDEXED),
        "raw_copy_unindexed": lambda: message_raw_copy(senders, UNINDEXED),
    }


def serve_message_rounds() -> None:
    """The subprocess: set up, say "ready", then run each round named on stdin and print its figure."""
    senders = message_setup()
    rounds = message_rounds(senders)
    cpu = CpuTimes()
    print("ready", flush=True)
    for line in sys.stdin:
        name = line.strip()
        if name == "cpu":
            print(json.dumps(cpu.medians()), flush=True)
        else:
            print(cpu.measure(name, rounds[name]), flush=True)
    message_truncate()


class MessageRounds:
    """The chat.Message rounds, run by a subprocess under the example project's settings (this
    process has the test settings, whose apps do not include the example's)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--messages"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": MESSAGE_SETTINGS},
        )
        self._answer("ready")

    def _answer(self, expected: str | None = None) -> str:
        assert self.proc.stdout
        # The example's log lines may share stdout: the answer is the first line that fits.
        while line := self.proc.stdout.readline():
            line = line.strip()
            if expected is not None and line == expected:
                return line
            if expected is None:
                try:
                    float(line)
                except ValueError:
                    continue
                return line
        raise RuntimeError(f"the chat.Message rounds exited with {self.proc.wait()}")

    def round(self, name: str) -> float:
        self._ask(name)
        return float(self._answer())

    def cpu_per_row(self) -> dict[str, dict[str, float | None]]:
        """Medians of client and server CPU µs per row of each round run so far."""
        self._ask("cpu")
        assert self.proc.stdout
        while line := self.proc.stdout.readline():
            if line.startswith("{"):
                figures: dict[str, dict[str, float | None]] = json.loads(line)
                return figures
        raise RuntimeError(f"the chat.Message rounds exited with {self.proc.wait()}")

    def _ask(self, name: str) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(f"{name}\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def message_comparisons(messages: MessageRounds) -> None:
    print(
        f"chat.Message benchmark: {MESSAGE_ROWS:,} rows a round (set BENCH_BULK_MESSAGE_ROWS), {ROUNDS} alternating"
        f" rounds, {SENDERS} senders, created_at over {MESSAGE_SPAN.days} days"
    )
    try:
        run = messages.round
        # The headline, by default and with stream=True: (title's head, option, round, key, target).
        # Issue 22's 3x is the target of the modes that overlap building the rows with the server's
        # work (stream=True here, workers=2 below). By default a batch is read whole before its COPY
        # (the caller's iterable may use the connection between batches), so the server waits while
        # the rows are built and the caller while the server writes: context, not judged.
        instance_rounds = (
            (
                "chat.Message (partitioned by month, its indexes and foreign key)",
                "",
                "ours_instances",
                "bulk.message_instances_vs_bulk_create",
                None,
            ),
            (
                "chat.Message",
                ", stream=True",
                "ours_instances_streamed",
                "bulk.message_instances_streamed_vs_bulk_create",
                3.0,
            ),
        )
        for head, option, name, key, target in instance_rounds:
            compare(
                f"{head}: batch_create(batch_size={CREATE_BATCH}{option}) vs bulk_create(batch_size=1000),"
                f" {MESSAGE_ROWS:,} instances built in the round (a generator for ours, a list for the peer)",
                functools.partial(run, name),
                lambda: run("peer_instances"),
                rounds=ROUNDS,
                unit="rows/s",
                ours_name=f"batch_create(instances{option})",
                peer_name="bulk_create",
                target=target,
                key=key,
            )
        # What leaving the objects from before the call out of the collector's passes brings.
        compare(
            f"chat.Message: batch_create(stream=True) of {MESSAGE_ROWS:,} instances, the objects from before the"
            " call frozen (the default) vs SCALEOPS_BULK_FREEZE_GC=False",
            functools.partial(run, "ours_instances_streamed"),
            functools.partial(run, "ours_instances_streamed_unfrozen"),
            rounds=ROUNDS,
            unit="rows/s",
            ours_name="frozen",
            peer_name="collector as it is",
            key="bulk.message_streamed_frozen_vs_unfrozen",
        )
        compare(
            f"chat.Message: batch_create(batch_size={CREATE_BATCH}) of {MESSAGE_ROWS:,} tuples vs psycopg's raw"
            " binary COPY of the same rows (same columns, nothing checked)",
            lambda: run("ours_tuples"),
            lambda: run("raw_copy"),
            rounds=ROUNDS,
            unit="rows/s",
            ours_name="batch_create(tuples)",
            peer_name="raw psycopg COPY",
            target=0.85,
            key="bulk.message_tuples_vs_raw_copy",
        )
        compare(
            f"chat.Message: batch_create(batch_size={CREATE_BATCH}) of {MESSAGE_ROWS:,} tuples vs bulk_create"
            "(batch_size=1000) (the peer builds instances from them)",
            lambda: run("ours_tuples"),
            lambda: run("peer_instances"),
            rounds=ROUNDS,
            unit="rows/s",
            ours_name="batch_create(tuples)",
            peer_name="bulk_create",
            key="bulk.message_tuples_vs_bulk_create",
        )
        # Ceiling of the first comparison: no writer given that generator goes faster than a raw
        # COPY reading each instance's attributes while it runs.
        compare(
            f"chat.Message ceiling for instances: raw psycopg binary COPY reading the {MESSAGE_ROWS:,} instances"
            " from the round's generator while it runs (nothing checked) vs bulk_create(batch_size=1000)",
            lambda: run("raw_copy_instances"),
            lambda: run("peer_instances"),
            rounds=ROUNDS,
            unit="rows/s",
            ours_name="raw COPY of the instances",
            peer_name="bulk_create",
            key="bulk.message_ceiling_raw_copy_instances_vs_bulk_create",
        )
        compare(
            f"chat.Message: batch_create(batch_size={CREATE_BATCH}, workers={WORKERS}) vs bulk_create"
            f"(batch_size=1000), {MESSAGE_ROWS:,} instances built in the round",
            lambda: run("ours_instances_workers"),
            lambda: run("peer_instances"),
            rounds=ROUNDS,
            unit="rows/s",
            ours_name=f"batch_create(instances, workers={WORKERS})",
            peer_name="bulk_create",
            target=3.0,
            key="bulk.message_instances_workers_vs_bulk_create",
        )
        # What the table's foreign key, partitions and indexes cost the server: the same raw COPY
        # into plain copies of the table with its indexes only, and with nothing.
        compare(
            f"chat.Message: raw psycopg binary COPY of {MESSAGE_ROWS:,} rows into chat_message vs into {INDEXED}"
            " (a plain table with the same 4 indexes: no partitions, no foreign key)",
            lambda: run("raw_copy"),
            lambda: run("raw_copy_indexed"),
            rounds=ROUNDS,
            unit="rows/s",
            ours_name="into chat_message",
            peer_name="into the indexed copy",
            key="bulk.message_copy_vs_indexed_copy",
        )
        compare(
            f"chat.Message: raw psycopg binary COPY of {MESSAGE_ROWS:,} rows into {INDEXED} vs into {UNINDEXED}"
            " (the same plain table without its indexes)",
            lambda: run("raw_copy_indexed"),
            lambda: run("raw_copy_unindexed"),
            rounds=ROUNDS,
            unit="rows/s",
            ours_name="into the indexed copy",
            peer_name="into the unindexed copy",
            key="bulk.message_indexed_copy_vs_unindexed_copy",
        )
        print("\nchat.Message, CPU per row (medians of the rounds above; server: the round's own backend)")
        for name, cpu in messages.cpu_per_row().items():
            server = "" if cpu["server"] is None else f"   server {cpu['server']:6.1f} µs"
            print(f"  {name:<24} client {cpu['client']:6.1f} µs{server}")
            record(
                f"chat.Message {name}: client CPU per row", float(cpu["client"] or 0), "µs/row", higher_is_better=False
            )
            if cpu["server"] is not None:
                record(f"chat.Message {name}: server CPU per row", cpu["server"], "µs/row", higher_is_better=False)
    finally:
        messages.close()


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


PROBES = [
    "ours_create_tuples",
    "ours_create_tuples_workers",
    "ours_create_instances",
    "peer_create",
    "ours_delete",
    "peer_delete",
    "ours_delete_receiver",
    "peer_delete_receiver",
]


def run_probes(names: list[str]) -> list[dict[str, float]]:
    """Each probe in a fresh process; under smoke mode (no figure judged) all in one, to stay quick."""
    groups = [names] if SMOKE else [[name] for name in names]
    figures: list[dict[str, float]] = []
    for group in groups:
        out = subprocess.run(
            [sys.executable, __file__, "--probe", *group], capture_output=True, text=True, check=True, env=os.environ
        )
        figures += [json.loads(line) for line in out.stdout.strip().splitlines()[-len(group) :]]
    return figures


def main() -> None:
    setup()
    if ONLY in ("", "create", "messages"):
        messages = MessageRounds()  # set up (migrate, partitions) while the replica runs
    with replica_paused():
        if ONLY in ("", "create", "messages"):
            message_comparisons(messages)
        if ONLY != "messages":
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
            target=8.0,
            key=f"bulk.item_{form}_workers_vs_bulk_create",
        )


def comparisons() -> None:
    print(
        f"\nbulkapp.Item (no secondary index) benchmark: create {ROWS:,} rows, update {UPDATE_ROWS:,} rows"
        f" x 3 fields, delete {DELETE_ROWS:,} rows,"
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
        key="bulk.item_instances_vs_bulk_create",
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
        target=5.0,
        key="bulk.item_list_vs_bulk_create",
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
        target=8.0,
        key="bulk.item_tuples_vs_bulk_create",
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
        target=8.0,
        key="bulk.item_dicts_vs_bulk_create",
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
        key="bulk.item_ceiling_instances_only",
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
        key="bulk.item_ceiling_raw_copy",
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
        target=8.0,
        key="bulk.update_vs_bulk_update",
    )
    compare(
        f"batch_delete(batch_size=5000) vs QuerySet.delete() (one statement), {DELETE_ROWS:,} rows, no receiver",
        lambda: delete_round(True, False),
        lambda: delete_round(False, False),
        rounds=ROUNDS,
        unit="rows/s",
        ours_name="batch_delete",
        peer_name="QuerySet.delete()",
        key="bulk.delete_vs_queryset_delete",
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
        key="bulk.delete_receiver_vs_queryset_delete",
    )
    print("\nPeak memory, one fresh process per operation (growth of peak RSS over RSS just before it)")
    for name, figures in zip(PROBES, run_probes(PROBES), strict=True):
        print(
            f"  {name:<28} {figures['rows']:>10,.0f} rows  {figures['rows_per_s']:>10,.0f} rows/s"
            f"  peak +{figures['peak_mib']:.1f} MiB"
        )
    truncate()


if __name__ == "__main__":
    own_database("bulk")
    if sys.argv[1:2] == ["--messages"]:
        serve_message_rounds()
    elif sys.argv[1:2] == ["--probe"]:
        setup(migrate=False)
        for name in sys.argv[2:]:
            print(json.dumps(probe(name)), flush=True)
    else:
        main()
