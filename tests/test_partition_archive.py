"""Retention with a verified archive, restore, and converting a populated table."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.files.storage import storages
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings

from django_scaleops.partitioning import archive
from django_scaleops.partitioning.convert import convert_table
from django_scaleops.partitioning.introspection import is_partitioned, partitions, table_exists
from tests.partitionapp.models import Event, LegacyLog, Ticket, TicketNote

pytestmark = pytest.mark.django_db


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def run(command: str, *args: str, **options) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out, **options)
    return out.getvalue()


@pytest.fixture(autouse=True)
def archive_storage(tmp_path):
    stores = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        "partition_archive": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    with override_settings(STORAGES=stores, SCALEOPS_PARTITION_ARCHIVE_STORAGE="partition_archive"):
        yield tmp_path


def archived_files(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def events_by_month() -> dict[int, list[tuple[Any, ...]]]:
    rows: dict[int, list[tuple[Any, ...]]] = {}
    for row in Event.objects.order_by("id").values_list("id", "name", "created_at"):
        rows.setdefault(row[2].month, []).append(row)
    return rows


@pytest.fixture
def six_months_of_events():
    run("ensure_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z", since="2024-01-01")
    start = utc(2024, 1, 1)
    Event.objects.bulk_create(
        Event(
            name=f'event {i}, with "quotes"\nand a newline' if i % 7 == 0 else f"event {i}",
            created_at=start + timedelta(hours=29 * i),
        )
        for i in range(150)  # January to mid-June
    )
    return events_by_month()


def test_dry_run_lists_partitions_past_retention_and_changes_nothing(six_months_of_events, archive_storage):
    out = run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z", dry_run=True)
    # Retention 3 months from June: January and February go, March stays.
    assert "archive partitionapp_event_p2024_01 [2024-01-01, 2024-02-01)" in out
    assert "archive partitionapp_event_p2024_02" in out
    assert "p2024_03" not in out
    assert "Dry run" in out
    assert events_by_month() == six_months_of_events
    assert archived_files(archive_storage) == []


def test_interrupted_archive_resumes_to_one_verified_archive_then_restores(
    six_months_of_events, archive_storage, monkeypatch
):
    def killed(using: str, name: str) -> None:
        raise KeyboardInterrupt("killed between upload and drop")

    monkeypatch.setattr(archive, "drop_archived", killed)
    with pytest.raises(KeyboardInterrupt):
        run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z")
    # The first partition is detached (its rows out of the table) and uploaded, not dropped.
    assert table_exists(connection, "partitionapp_event_p2024_01")
    assert "partitionapp_event_p2024_01" not in [p.name for p in partitions(connection, "partitionapp_event")]
    assert 1 not in events_by_month()

    monkeypatch.undo()
    out = run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z")
    assert "finish archiving detached partitionapp_event_p2024_01" in out
    assert "partitionapp_event_p2024_01 already has an archive; verifying it" in out
    assert "100% 2/2" in out
    for month in ("01", "02"):
        assert not table_exists(connection, f"partitionapp_event_p2024_{month}")
    folder = "scaleops-archive/default/partitionapp_event"
    assert archived_files(archive_storage) == [
        f"{folder}/partitionapp_event_p2024_01.csv.gz",
        f"{folder}/partitionapp_event_p2024_01.manifest.json",
        f"{folder}/partitionapp_event_p2024_02.csv.gz",
        f"{folder}/partitionapp_event_p2024_02.manifest.json",
    ]
    manifest = json.loads((archive_storage / folder / "partitionapp_event_p2024_01.manifest.json").read_text())
    january = six_months_of_events[1]
    assert manifest["rows"] == len(january)
    assert manifest["min_key"] == min(r[2] for r in january).isoformat()
    assert manifest["max_key"] == max(r[2] for r in january).isoformat()
    assert sorted(events_by_month()) == [3, 4, 5, 6]
    assert "nothing to archive" in run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z")

    # Restore gives back the same rows, with the checksum of the manifest.
    listing = run("restore_partition", "partitionapp.Event", list=True)
    assert "partitionapp_event_p2024_01, partitionapp_event_p2024_02" in listing
    out = run("restore_partition", "partitionapp.Event", "partitionapp_event_p2024_01")
    assert f"restored {len(january)} rows into partitionapp_event_p2024_01 (checksum verified)" in out
    assert events_by_month()[1] == january
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM partitionapp_event WHERE id = %s", [january[0][0]])
        assert cursor.fetchone()[0] == "partitionapp_event_p2024_01"
    with pytest.raises(CommandError, match="already exists"):
        run("restore_partition", "partitionapp.Event", "partitionapp_event_p2024_01")
    # Archiving the restored partition again reuses its archive: still one per partition.
    run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z")
    assert len(archived_files(archive_storage)) == 4
    assert 1 not in events_by_month()


def test_a_tampered_archive_is_never_trusted(six_months_of_events, archive_storage, monkeypatch):
    monkeypatch.setattr(archive, "drop_archived", lambda using, name: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z")
    monkeypatch.undo()
    path = "scaleops-archive/default/partitionapp_event/partitionapp_event_p2024_01.csv.gz"
    storage = storages["partition_archive"]
    storage.delete(path)
    import gzip
    import io

    storage.save(path, io.BytesIO(gzip.compress(b"1,forged,2024-01-01 00:00:00+00\n")))
    with pytest.raises(CommandError, match="does not match the table"):
        run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z")
    assert table_exists(connection, "partitionapp_event_p2024_01")  # kept
    # The next run exports again and finishes.
    run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z")
    assert not table_exists(connection, "partitionapp_event_p2024_01")


def test_restore_of_a_missing_archive_is_a_clear_error():
    with pytest.raises(CommandError, match="no archive of 'partitionapp_event_p1999_01'"):
        run("restore_partition", "partitionapp.Event", "partitionapp_event_p1999_01")
    with pytest.raises(CommandError, match="not allowed"):
        run("restore_partition", "partitionapp.Event", "x; DROP TABLE auth_user")


def test_referencing_partitions_are_archived_before_referenced_ones():
    run("ensure_partitions", model=["partitionapp.Ticket", "partitionapp.TicketNote"], now="2024-01-10T00:00:00Z")
    ticket = Ticket.objects.create(title="t", created_at=utc(2024, 1, 10))
    TicketNote.objects.create(ticket=ticket, text="n", created_at=ticket.created_at)
    connection.check_constraints()  # fire the deferred key now, as a commit would in production
    out = run(
        "archive_partitions", model=["partitionapp.Ticket", "partitionapp.TicketNote"], now="2024-04-10T00:00:00Z"
    )
    assert out.index("partitionapp_ticketnote_p2024_01") < out.index("partitionapp_ticket_p2024_01")
    assert not Ticket.objects.exists()
    assert not TicketNote.objects.exists()


def test_archiving_a_still_referenced_partition_fails_clearly():
    run("ensure_partitions", model=["partitionapp.Ticket", "partitionapp.TicketNote"], now="2024-01-10T00:00:00Z")
    ticket = Ticket.objects.create(title="t", created_at=utc(2024, 1, 10))
    TicketNote.objects.create(ticket=ticket, text="n", created_at=ticket.created_at)
    connection.check_constraints()  # fire the deferred key now, as a commit would in production
    with pytest.raises(CommandError, match="archive the referencing partitions first"):
        run("archive_partitions", model=["partitionapp.Ticket"], now="2024-04-10T00:00:00Z")
    assert Ticket.objects.filter(pk=ticket.pk).exists()


def test_convert_a_populated_table_keeps_every_row(monkeypatch):
    # Unmanaged so the test database starts without it; managed here so Django creates its indexes.
    monkeypatch.setattr(LegacyLog._meta, "managed", True)
    with connection.schema_editor() as editor:
        editor.create_model(LegacyLog)
    LegacyLog.objects.bulk_create(
        LegacyLog(message=f"m{i}", created_at=utc(2023, 1, 1) + timedelta(days=3 * i)) for i in range(200)
    )
    before = sorted(LegacyLog.objects.values_list("id", "message", "created_at"))
    with connection.schema_editor() as editor:
        first = convert_table(
            editor, LegacyLog, key="created_at", interval="month", default_partition=True, now=utc(2024, 8, 20)
        )
    assert first == "partitionapp_legacylog_legacy"
    assert is_partitioned(connection, "partitionapp_legacylog")
    found = partitions(connection, "partitionapp_legacylog")
    assert [(p.name, p.start, p.end, p.is_default) for p in found] == [
        ("partitionapp_legacylog_legacy", None, utc(2024, 9, 1), False),
        ("partitionapp_legacylog_default", None, None, True),
    ]
    assert sorted(LegacyLog.objects.values_list("id", "message", "created_at")) == before
    # New rows continue the id sequence and go where they belong.
    new = LegacyLog.objects.create(message="after", created_at=utc(2024, 10, 2))
    assert new.pk == before[-1][0] + 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM partitionapp_legacylog WHERE id = %s", [new.pk])
        assert cursor.fetchone()[0] == "partitionapp_legacylog_default"
        # The index on message was adopted by the new parent, not rebuilt under another name.
        cursor.execute(
            "SELECT c.relname, count(i.inhparent) FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid"
            " LEFT JOIN pg_inherits i ON i.inhrelid = x.indexrelid"
            " WHERE x.indrelid = 'partitionapp_legacylog_legacy'::regclass GROUP BY 1 ORDER BY 1"
        )
        adopted = cursor.fetchall()
    # Primary key (id, created_at), message and message LIKE: each attached to the parent's index.
    assert len(adopted) == 3
    assert all(count == 1 for _, count in adopted)


def test_validate_reports_interrupted_work(six_months_of_events, monkeypatch):
    monkeypatch.setattr(archive, "drop_archived", lambda using, name: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z")
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE partitionapp_event_p2030_01 (LIKE partitionapp_event)")
    out = StringIO()
    with pytest.raises(CommandError, match="2 partitioning problem"):
        call_command("validate_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z", stdout=out)
    kinds = [line.split(": ")[1] for line in out.getvalue().splitlines()]
    assert kinds == ["archive_pending", "detached_table"]


def test_convert_reuses_a_check_and_index_prepared_beforehand(monkeypatch):
    monkeypatch.setattr(LegacyLog._meta, "managed", True)
    with connection.schema_editor() as editor:
        editor.create_model(LegacyLog)
    LegacyLog.objects.bulk_create(LegacyLog(message=f"m{i}", created_at=utc(2024, 1, 1 + i)) for i in range(20))
    with connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE partitionapp_legacylog ADD CONSTRAINT scaleops_partition_range"
            " CHECK (created_at IS NOT NULL AND created_at < '2024-09-01') NOT VALID"
        )
        cursor.execute("ALTER TABLE partitionapp_legacylog VALIDATE CONSTRAINT scaleops_partition_range")
        cursor.execute(
            "CREATE UNIQUE INDEX partitionapp_legacylog_pkey_partitioned ON partitionapp_legacylog (id, created_at)"
        )
    with CaptureQueriesContext(connection) as queries, connection.schema_editor(collect_sql=False) as editor:
        convert_table(
            editor, LegacyLog, key="created_at", interval="month", default_partition=False, now=utc(2024, 8, 20)
        )
    assert is_partitioned(connection, "partitionapp_legacylog")
    assert LegacyLog.objects.count() == 20
    statements = " ".join(q["sql"] for q in queries)
    assert "VALIDATE CONSTRAINT" not in statements
    assert 'ADD CONSTRAINT "scaleops_partition_range"' not in statements


def test_archive_false_drops_without_an_archive(six_months_of_events, archive_storage):
    with override_settings(SCALEOPS_PARTITION_MODELS={"partitionapp.Event": {"archive": False}}):
        out = run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z")
    assert "dropped partitionapp_event_p2024_01 (archive=False)" in out
    assert not table_exists(connection, "partitionapp_event_p2024_02")
    assert archived_files(archive_storage) == []
    assert sorted(events_by_month()) == [3, 4, 5, 6]


def test_restore_without_attach_leaves_a_standalone_table(six_months_of_events):
    run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z")
    out = run("restore_partition", "partitionapp.Event", "partitionapp_event_p2024_02", no_attach=True)
    assert "attached" not in out
    assert 2 not in events_by_month()  # not visible through the model
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, name, created_at FROM partitionapp_event_p2024_02 ORDER BY id")
        assert cursor.fetchall() == six_months_of_events[2]
