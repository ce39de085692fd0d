"""Partitioned vs plain, the same rows and the same indexes, in one run.

* Removing the oldest month: ``archive_partitions``' steps (detach → COPY out → upload a new
  object → read back → manifest → verify → drop) vs ``DELETE`` + ``VACUUM`` on the plain table.
  Ours is measured as the time the table is locked (the detach and drop transactions; the export
  reads a detached table and blocks nobody), the peer as the DELETE + VACUUM it needs; WAL written
  by each, the archive's whole wall time, and the time ``restore_partition`` takes to bring one
  month back (checksum-verified, through the partitioned table) are printed too.
* A latest-month query bounded by ``created_at``, and the same query without the bound.
* Index size: every index of every partition vs the plain table's indexes, as grown by inserts
  and after REINDEX.
* A lookup by id through the ORM, with 24 and then 36 monthly partitions (and a default one):
  ``TimeOrderedIdField``'s derived ``created_at`` bound (one partition) vs the same table's lookup
  by id alone, as before (every partition's primary-key index), and the partitions each plan touches.

Scale: BENCH_PARTITION_ROWS rows (default 1,000,000) over 24 months, so the run takes a few
minutes on 2 cores; the issue's 5M+ figure needs BENCH_PARTITION_ROWS=5000000 and patience.
Under ``SCALEOPS_BENCH_SMOKE=1`` everything is tiny (a few thousand rows, one round);
``BENCH_PARTITION_ONLY=ids`` runs only the lookups by id and the insert cost of time-ordered ids.
Run with ``make bench``, or alone:
``python -m django_scaleops.testing.services run -- python benchmarks/bench_partitioning.py``.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import compare, own_database, record, sized

ROWS = sized(int(os.environ.get("BENCH_PARTITION_ROWS", "1000000")), 4_800)
MONTHS = 24
ROUNDS = 5  # months removed by each side
QUERIES_PER_ROUND = sized(200, 10)
ID_LOOKUP_MONTHS = (24, 36)
ID_ROWS_PER_MONTH = sized(10_000, 100)
INSERT_ROWS = sized(50_000, 500)
ID_LOOKUPS_PER_ROUND = sized(200, 20)
FIRST = datetime(2023, 1, 1, tzinfo=UTC)
NOW = datetime(2025, 1, 15, tzinfo=UTC)  # the 24 months of data are 2023 and 2024
PLAIN = "bench_message_plain"


def setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    import django

    django.setup()


def sql(statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return list(cursor.fetchall()) if cursor.description else []


def prepare() -> list[int]:
    """Fill chat_message (partitioned) and a plain copy with the same rows; returns sender ids."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    with open(os.devnull, "w") as quiet:
        call_command(
            "ensure_partitions", model=["chat.Message"], since=FIRST.isoformat(), now=NOW.isoformat(), stdout=quiet
        )
    User = get_user_model()
    senders = list(User.objects.filter(username__startswith="bench").values_list("id", flat=True))
    if not senders:
        senders = [u.pk for u in User.objects.bulk_create(User(username=f"bench{i}") for i in range(200))]
    sql(f"DROP TABLE IF EXISTS {PLAIN}")
    sql("DELETE FROM chat_message WHERE created_at < %s", [NOW])
    started = time.perf_counter()
    sql(
        "INSERT INTO chat_message (sender_id, body, created_at)"
        " SELECT (%s::int[])[1 + (g %% %s)], 'message ' || g || repeat(' lorem', 1 + g %% 12),"
        "  %s::timestamptz + (g::float8 / %s) * (%s::timestamptz - %s::timestamptz)"
        " FROM generate_series(0, %s - 1) g",
        [senders, len(senders), FIRST, ROWS, NOW.replace(day=1), FIRST, ROWS],
    )
    # The same rows and the same indexes, with the plain table's single-column primary key.
    # Indexes exist before the rows arrive, on both tables: grown by inserts, as in production.
    sql(f"CREATE TABLE {PLAIN} (LIKE chat_message INCLUDING DEFAULTS)")
    sql(f"ALTER TABLE {PLAIN} ADD PRIMARY KEY (id)")
    sql(f"CREATE INDEX {PLAIN}_sender ON {PLAIN} (sender_id, created_at DESC)")
    sql(f"CREATE INDEX {PLAIN}_created ON {PLAIN} (created_at)")
    sql(f"CREATE INDEX {PLAIN}_sender_fk ON {PLAIN} (sender_id)")
    sql(f"INSERT INTO {PLAIN} SELECT * FROM chat_message WHERE created_at < %s ORDER BY id", [NOW])
    sql(f"VACUUM ANALYZE {PLAIN}")
    sql("VACUUM ANALYZE chat_message")
    print(
        f"Scale: {ROWS:,} rows over {MONTHS} months (~{ROWS // MONTHS:,} a month), in chat_message"
        f" (partitioned by month) and {PLAIN} (plain); loaded in {time.perf_counter() - started:.0f}s"
    )
    return senders


def index_bytes(tables: list[str]) -> int:
    return sum(int(sql("SELECT pg_indexes_size(to_regclass(quote_ident(%s)))", [t])[0][0]) for t in tables)


def report_index_sizes(how: str) -> None:
    from django.db import connection

    from django_scaleops.partitioning.introspection import partitions

    # Only the partitions of the benchmark's months (the example's own demo rows live later).
    children = [p.name for p in partitions(connection, "chat_message") if p.end and p.end <= NOW.replace(day=1)]
    ours, plain = index_bytes(children), index_bytes([PLAIN])
    print(f"\nIndex size, same rows and indexes, {how} (ours adds created_at to the primary key)")
    print(f"  partitioned {ours / 2**20:,.1f} MiB   plain {plain / 2**20:,.1f} MiB   ratio {ours / plain:.3f}")


def reindex_both() -> None:
    sql(f"REINDEX TABLE {PLAIN}")
    sql("REINDEX TABLE chat_message")  # each partition's indexes


def bench_queries(senders: list[int]) -> None:
    latest = (datetime(2024, 12, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    rng = random.Random(7)
    bounded = (
        "SELECT id, body, created_at FROM {t} WHERE sender_id = %s AND created_at >= %s AND created_at < %s"
        " ORDER BY created_at DESC LIMIT 50"
    )
    unbounded = "SELECT id, body, created_at FROM {t} WHERE sender_id = %s ORDER BY created_at DESC LIMIT 50"

    def timed(template: str, table: str, bound: bool) -> float:
        picks = [rng.choice(senders) for _ in range(QUERIES_PER_ROUND)]
        started = time.perf_counter()
        for sender in picks:
            sql(template.format(t=table), [sender, *latest] if bound else [sender])
        return (time.perf_counter() - started) * 1000 / QUERIES_PER_ROUND

    def runner(template: str, table: str, bound: bool) -> Any:
        return lambda: timed(template, table, bound)

    for template, bound, title, key in (
        (
            bounded,
            True,
            "Latest-month query of one sender, bounded by created_at (ms per query)",
            "partitioning.latest_month_bounded_vs_plain",
        ),
        (
            unbounded,
            False,
            "The same query without a created_at bound (ms per query)",
            "partitioning.latest_month_unbounded_vs_plain",
        ),
    ):
        compare(
            title,
            runner(template, "chat_message", bound),
            runner(template, PLAIN, bound),
            unit="ms",
            higher_is_better=False,
            ours_name="partitioned",
            peer_name="plain",
            key=key,
        )


def id_lookup_table(months: int) -> tuple[str, list[int]]:
    """A table partitioned by month over ``months`` months plus a default partition, with
    time-ordered ids (the trigger, as the example's migration installs it); returns a sample of ids."""
    from django_scaleops.partitioning import intervals
    from django_scaleops.partitioning.ids import install_sql

    table = f"bench_ids_{months}"
    sql(f"DROP TABLE IF EXISTS {table} CASCADE")
    sql(
        f"CREATE TABLE {table} (id bigint NOT NULL, body text NOT NULL, created_at timestamptz NOT NULL,"
        " PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)"
    )
    sql(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
    start = FIRST
    for _ in range(months):
        end = intervals.add(start, "month")
        name = f"{table}_{intervals.suffix(start, 'month')}"
        sql(f"CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM (%s) TO (%s)", [start, end])
        start = end
    for statement in install_sql(table, "created_at"):
        sql(statement)
    rows = ID_ROWS_PER_MONTH * months
    sql(
        f"INSERT INTO {table} (body, created_at)"
        " SELECT 'message ' || g, %s::timestamptz + (g::float8 / %s) * (%s::timestamptz - %s::timestamptz)"
        " FROM generate_series(0, %s - 1) g",
        [FIRST, rows, start, FIRST, rows],
    )
    sql(f"VACUUM ANALYZE {table}")
    sample = [int(r[0]) for r in sql(f"SELECT id FROM {table} ORDER BY random() LIMIT 2000")]
    return table, sample


def lookup_models(table: str) -> tuple[type[Any], type[Any]]:
    """Two unmanaged models over ``table``: with ``TimeOrderedIdField`` (ours) and with the plain
    ``BigAutoField`` every partitioned model had before (a lookup by id alone)."""
    from django.db import models

    from django_scaleops.partitioning import TimeOrderedIdField

    def model(name: str, pk: models.Field[Any, Any]) -> type[Any]:
        meta = type("Meta", (), {"app_label": "chat", "managed": False, "db_table": table})
        fields = {"id": pk, "body": models.TextField(), "created_at": models.DateTimeField()}
        return type(name, (models.Model,), {"__module__": __name__, "Meta": meta, **fields})

    camel = table.title().replace("_", "")
    return model(f"{camel}TimeOrdered", TimeOrderedIdField()), model(
        f"{camel}IdAlone", models.BigAutoField(primary_key=True)
    )


def partitions_in_plan(queryset: Any, table: str) -> int:
    from django.db import connection

    statement, params = queryset.query.get_compiler(connection=connection).as_sql()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {statement}", params)
        plan = cursor.fetchone()[0]

    def relations(node: dict[str, Any]) -> set[str]:
        found = {node["Relation Name"]} if "Relation Name" in node else set()
        for child in node.get("Plans", []):
            found |= relations(child)
        return found

    return sum(1 for name in relations(plan[0]["Plan"]) if name.startswith(f"{table}_"))


def server_side(ours_model: Any, peer_model: Any, picks: list[int], months: int) -> None:
    """Planning and execution time as the server reports them (EXPLAIN ANALYZE), per lookup:
    less disturbed by a busy client than wall time, and it shows where the difference is."""
    from django.db import connection

    for name, model in (("derived bound", ours_model), ("id alone", peer_model)):
        planning, execution = [], []
        for pk in picks:
            text, params = model.objects.filter(pk=pk).query.get_compiler(connection=connection).as_sql()
            with connection.cursor() as cursor:
                cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {text}", params)
                report = cursor.fetchone()[0][0]
            planning.append(report["Planning Time"] * 1000)
            execution.append(report["Execution Time"] * 1000)
        plan_us, exec_us = statistics.median(planning), statistics.median(execution)
        print(f"  {months} months, {name}: server planning {plan_us:,.0f} µs, execution {exec_us:,.0f} µs (medians)")
        for what, value in (("planning", plan_us), ("execution", exec_us)):
            record(
                f"Lookup by id, {months} monthly partitions: server {what} time ({name})",
                value,
                "µs",
                higher_is_better=False,
            )


def bench_id_lookups() -> None:
    rng = random.Random(11)
    for months in ID_LOOKUP_MONTHS:
        table, sample = id_lookup_table(months)
        ours_model, peer_model = lookup_models(table)
        touched = {
            "derived bound": partitions_in_plan(ours_model.objects.filter(pk=sample[0]), table),
            "id alone": partitions_in_plan(peer_model.objects.filter(pk=sample[0]), table),
        }
        print(
            f"\nLookup by id, {months} monthly partitions + default, {ID_ROWS_PER_MONTH * months:,} rows:"
            f" partitions in the plan: derived bound {touched['derived bound']}, id alone {touched['id alone']}"
        )
        for name, count in touched.items():
            record(
                f"Lookup by id, {months} monthly partitions: partitions in the plan ({name})",
                count,
                "partitions",
                higher_is_better=False,
            )

        server_side(ours_model, peer_model, [rng.choice(sample) for _ in range(ID_LOOKUPS_PER_ROUND)], months)

        # On the primary: the example's router would send reads to a replica that lags while
        # the tables load. The same random ids for both sides in each round.
        def orm(model: Any, picks: list[int]) -> Any:
            def one_round() -> float:
                started = time.perf_counter()
                for pk in picks:
                    model.objects.using("default").get(pk=pk)
                return (time.perf_counter() - started) * 1_000_000 / len(picks)

            return one_round

        def statement(model: Any, picks: list[int]) -> Any:
            """The statement the ORM compiles, run by psycopg alone: the database's share."""
            import psycopg
            from django.db import connection

            compiled = [model.objects.filter(pk=pk).query.get_compiler(connection=connection).as_sql() for pk in picks]
            raw = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)

            def one_round() -> float:
                started = time.perf_counter()
                for text, params in compiled:
                    raw.execute(text, params).fetchall()
                return (time.perf_counter() - started) * 1_000_000 / len(compiled)

            return one_round

        for how, runner, key in (
            ("through the ORM", orm, f"partitioning.id_lookup_{months}_months"),
            ("statement alone (psycopg)", statement, f"partitioning.id_lookup_{months}_months_sql"),
        ):
            picks = [rng.choice(sample) for _ in range(ID_LOOKUPS_PER_ROUND)]
            compare(
                f"Lookup by id {how}, {months} monthly partitions + default (µs per lookup)",
                runner(ours_model, picks),
                runner(peer_model, picks),
                unit="µs",
                higher_is_better=False,
                ours_name="derived created_at bound",
                peer_name="id alone (before)",
                key=key,
            )


def bench_insert_cost() -> None:
    """What the trigger costs a write: the same INSERT ... SELECT into two partitioned tables,
    one with an identity column (before), one computing time-ordered ids (ours)."""
    from django_scaleops.partitioning.ids import install_sql

    def make(table: str, time_ordered: bool) -> None:
        sql(f"DROP TABLE IF EXISTS {table} CASCADE")
        identity = "" if time_ordered else " GENERATED BY DEFAULT AS IDENTITY"
        sql(
            f"CREATE TABLE {table} (id bigint{identity} NOT NULL, body text NOT NULL, created_at timestamptz NOT NULL,"
            " PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)"
        )
        sql(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        if time_ordered:
            for statement in install_sql(table, "created_at"):
                sql(statement)

    make("bench_insert_ours", True)
    make("bench_insert_identity", False)

    def runner(table: str) -> Any:
        def one_round() -> float:
            sql(f"TRUNCATE {table}")
            started = time.perf_counter()
            sql(
                f"INSERT INTO {table} (body, created_at)"
                " SELECT 'message ' || g, %s::timestamptz + g * interval '1 second' FROM generate_series(1, %s) g",
                [FIRST, INSERT_ROWS],
            )
            return (time.perf_counter() - started) * 1_000_000 / INSERT_ROWS

        return one_round

    compare(
        f"Inserting {INSERT_ROWS:,} rows in one INSERT ... SELECT (µs per row)",
        runner("bench_insert_ours"),
        runner("bench_insert_identity"),
        rounds=5,
        unit="µs",
        higher_is_better=False,
        ours_name="time-ordered id (trigger)",
        peer_name="identity column (before)",
        key="partitioning.insert_time_ordered_vs_identity",
    )


def bench_month_removal() -> None:
    from dataclasses import replace

    from django.db import connection
    from django.test.utils import override_settings

    from django_scaleops.partitioning import archive, get_config
    from django_scaleops.partitioning.archive import ArchiveStep, archive_partition, restore_partition
    from django_scaleops.partitioning.introspection import partitions
    from django_scaleops.partitioning.locks import run_with_lock_timeout

    config = replace(get_config("chat.Message"), retention=1, archive=True)
    locked: list[float] = []
    steps: dict[str, list[float]] = {}
    real = run_with_lock_timeout

    def timed_lock(using: str, work: Any, *, what: str) -> Any:
        started = time.perf_counter()
        try:
            return real(using, work, what=what)
        finally:
            locked.append((time.perf_counter() - started) * 1000)
            steps.setdefault(what.split()[0], []).append(locked[-1])

    wal: dict[str, list[int]] = {"ours": [], "peer": []}
    totals: list[float] = []
    archived: list[str] = []
    rows_removed: list[int] = []
    peer_times: list[float] = []

    def lsn() -> str:
        return str(sql("SELECT pg_current_wal_lsn()")[0][0])

    def wal_since(start: str) -> int:
        return int(sql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", [start])[0][0])

    def ours() -> float:
        oldest = next(p for p in partitions(connection, "chat_message") if not p.is_default)
        locked.clear()
        start, began = lsn(), time.perf_counter()
        archive_partition(
            ArchiveStep(config, oldest.name, oldest.start, oldest.end, "attached"),
            using="default",
            report=lambda line: None,
        )
        totals.append((time.perf_counter() - began) * 1000)
        archived.append(oldest.name)
        wal["ours"].append(wal_since(start))
        return sum(locked)

    def peer() -> float:
        month_start = sql(f"SELECT date_trunc('month', min(created_at), 'UTC') FROM {PLAIN}")[0][0]
        month_end = month_start.replace(
            month=month_start.month % 12 + 1, year=month_start.year + month_start.month // 12
        )
        start, began = lsn(), time.perf_counter()
        rows_removed.append(
            len(
                sql(
                    f"DELETE FROM {PLAIN} WHERE created_at >= %s AND created_at < %s RETURNING 1",
                    [month_start, month_end],
                )
            )
        )
        sql(f"VACUUM {PLAIN}")
        elapsed = (time.perf_counter() - began) * 1000
        wal["peer"].append(wal_since(start))
        peer_times.append(elapsed)
        return elapsed

    with (
        mock.patch.object(archive, "run_with_lock_timeout", timed_lock),
        tempfile.TemporaryDirectory() as folder,
        override_settings(
            STORAGES={
                "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
                "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
                "bench_archive": {
                    "BACKEND": "django.core.files.storage.FileSystemStorage",
                    "OPTIONS": {"location": folder},
                },
            },
            SCALEOPS_PARTITION_ARCHIVE_STORAGE="bench_archive",
        ),
    ):
        compare(
            f"Removing the oldest month (~{statistics.median(rows_removed or [ROWS // MONTHS]):,.0f} rows):"
            " ours = table lock time of archive_partitions, peer = DELETE + VACUUM (ms)",
            ours,
            peer,
            rounds=ROUNDS,
            unit="ms",
            higher_is_better=False,
            ours_name="archive (detach+drop)",
            peer_name="DELETE + VACUUM",
            key="partitioning.month_removal_lock_vs_delete_vacuum",
        )
        with mock.patch.object(archive, "run_with_lock_timeout", real):  # not a removal step: untimed above
            began = time.perf_counter()
            restored = restore_partition(config, archived[-1], using="default", report=lambda line: None)
            restore_ms = (time.perf_counter() - began) * 1000
    print(f"  rows per month removed by DELETE: median {statistics.median(rows_removed):,.0f}")
    print(
        "  ours, per locking step: " + ", ".join(f"{k} median {statistics.median(v):,.1f} ms" for k, v in steps.items())
    )
    # Only the detach locks the partitioned table; the drop locks the already detached table.
    detach, peer_ms = statistics.median(steps["detach"]), statistics.median(peer_times)
    print(
        f"  lock held on the partitioned table itself (detach only): median {detach:,.1f} ms,"
        f" {peer_ms / detach:,.0f}x less than DELETE + VACUUM"
    )
    print(
        "  archive_partitions wall time incl. COPY export, gzip, read-back verify:"
        f" median {statistics.median(totals):,.0f} ms (min {min(totals):,.0f}, max {max(totals):,.0f};"
        " the table is not locked during the export)"
    )
    print(
        f"  restore_partition of one month ({restored.rows_inserted:,} rows, checksum-verified, inserted"
        f" through the partitioned table): {restore_ms:,.0f} ms"
    )
    ours_wal, peer_wal = statistics.median(wal["ours"]), statistics.median(wal["peer"])
    print(
        f"  WAL written: ours median {ours_wal / 1024:,.0f} KiB, DELETE + VACUUM median {peer_wal / 1024:,.0f} KiB"
        f" ({peer_wal / max(ours_wal, 1):,.0f}x more)"
    )


def main() -> None:
    setup()
    bench_id_lookups()
    bench_insert_cost()
    if os.environ.get("BENCH_PARTITION_ONLY") == "ids":
        return
    senders = prepare()
    report_index_sizes("grown by inserts")
    bench_queries(senders)
    bench_month_removal()
    reindex_both()
    report_index_sizes("freshly rebuilt (REINDEX)")


if __name__ == "__main__":
    own_database("partitioning")
    main()
