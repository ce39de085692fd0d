"""Retention with a verified archive, restore, and converting a populated table."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
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
from django_scaleops.partitioning.errors import PartitioningError
from django_scaleops.partitioning.introspection import is_partitioned, partitions, table_exists, waiting_for_archive
from example_project.chat.models import Message
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


FOLDER = "scaleops-archive/default/partitionapp_event"
OBJECT_NAME = re.compile(r"^(?P<partition>\w+)\.(?P<run>\d{8}T\d{12}Z-[0-9a-f]{8})\.(?P<sha>[0-9a-f]{64})\.csv\.gz$")


def contents(root) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in archived_files(root)}


def latest_manifest(root, partition: str, folder: str = FOLDER) -> dict[str, Any]:
    generations = sorted((root / folder).glob(f"{partition}.manifest.*.json"))
    manifest: dict[str, Any] = json.loads(generations[-1].read_text())
    return manifest


def test_interrupted_archive_resumes_to_one_verified_archive_per_partition_then_restores(
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
    assert "partitionapp_event_p2024_01 is already archived as partitionapp_event_p2024_01." in out
    assert "verifying it in storage" in out
    assert "100% 2/2" in out
    for month in ("01", "02"):
        assert not table_exists(connection, f"partitionapp_event_p2024_{month}")
    # One object per archive run, named <partition>.<run id>.<sha256>.csv.gz, and one manifest generation.
    files = [f.removeprefix(f"{FOLDER}/") for f in archived_files(archive_storage)]
    objects = [OBJECT_NAME.match(f) for f in files if f.endswith(".csv.gz")]
    assert [m["partition"] for m in objects if m] == ["partitionapp_event_p2024_01", "partitionapp_event_p2024_02"]
    assert sorted(f for f in files if not f.endswith(".csv.gz")) == [
        "partitionapp_event_p2024_01.manifest.000001.json",
        "partitionapp_event_p2024_02.manifest.000001.json",
    ]
    manifest = latest_manifest(archive_storage, "partitionapp_event_p2024_01")
    january = six_months_of_events[1]
    assert (manifest["version"], manifest["generation"], len(manifest["archives"])) == (2, 1, 1)
    entry = manifest["archives"][0]
    assert entry["rows"] == len(january)
    assert entry["min_key"] == min(r[2] for r in january).isoformat()
    assert entry["max_key"] == max(r[2] for r in january).isoformat()
    data = gzip.decompress((archive_storage / FOLDER / entry["name"]).read_bytes())
    named = OBJECT_NAME.match(entry["name"])
    assert named is not None
    assert hashlib.sha256(data).hexdigest() == entry["sha256"] == named["sha"]
    assert sorted(events_by_month()) == [3, 4, 5, 6]
    assert "nothing to archive" in run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z")

    # Restore gives back the same rows, with the checksum of the manifest.
    listing = run("restore_partition", "partitionapp.Event", list=True)
    assert "partitionapp_event_p2024_01, partitionapp_event_p2024_02" in listing
    assert f"run {entry['run_id']}: {len(january)} rows, {entry['name']}" in listing
    out = run("restore_partition", "partitionapp.Event", "partitionapp_event_p2024_01")
    assert f"read {entry['name']}: {len(january)} rows (checksum verified)" in out
    assert f"restored {len(january)} rows into partitionapp_event_p2024_01 from 1 archive object(s)" in out
    assert events_by_month()[1] == january
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM partitionapp_event WHERE id = %s", [january[0][0]])
        assert cursor.fetchone()[0] == "partitionapp_event_p2024_01"
    # Restoring again adds nothing: every row's primary key is already there.
    out = run("restore_partition", "partitionapp.Event", "partitionapp_event_p2024_01")
    assert f"0 row(s) inserted, {len(january)} already present" in out
    assert events_by_month()[1] == january
    # Archiving the unchanged restored partition again reuses its archive: nothing new is written.
    before = contents(archive_storage)
    out = run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z")
    assert "is already archived as" in out
    assert contents(archive_storage) == before
    assert 1 not in events_by_month()


def test_a_tampered_archive_is_never_trusted(six_months_of_events, archive_storage, monkeypatch):
    monkeypatch.setattr(archive, "drop_archived", lambda using, name: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z")
    monkeypatch.undo()
    tampered = latest_manifest(archive_storage, "partitionapp_event_p2024_01")["archives"][0]
    forged = gzip.compress(b"1,forged,2024-01-01 00:00:00+00\n")
    (archive_storage / FOLDER / tampered["name"]).write_bytes(forged)  # the storage itself goes bad
    out = run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z")
    assert f"WARNING: {tampered['name']}: its content no longer matches its checksum; writing a new archive" in out
    assert not table_exists(connection, "partitionapp_event_p2024_01")  # dropped once the new archive verified
    manifest = latest_manifest(archive_storage, "partitionapp_event_p2024_01")
    assert manifest["generation"] == 2
    listed = [a["name"] for a in manifest["archives"]]
    assert len(listed) == 2
    assert listed[0] == tampered["name"]  # still listed, never deleted
    assert (archive_storage / FOLDER / tampered["name"]).read_bytes() == forged
    # Restore never takes the bad object: alone it is refused, and with the rest the good copy is read.
    with pytest.raises(CommandError, match="does not match its manifest"):
        run("restore_partition", "partitionapp.Event", "partitionapp_event_p2024_01", archive=tampered["run_id"])
    assert 1 not in events_by_month()
    out = run("restore_partition", "partitionapp.Event", "partitionapp_event_p2024_01")
    assert f"{tampered['name']} holds the same rows (same checksum); not read again" in out
    assert events_by_month()[1] == six_months_of_events[1]


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


# ---- archives are immutable and complete ---------------------------------------------------------


def test_rearchiving_a_recreated_month_adds_an_archive_and_restore_brings_back_every_row(
    archive_storage, django_user_model
):
    """The reported loss, on the example's chat.Message: archive a month of 1,000 rows, a late row
    re-creates the month (ensure_partitions --rescue-default), archive twice. The 1,000-row
    archive used to be replaced by a 1-row one, and restore brought back 1 row."""
    now = "2024-02-15T00:00:00Z"  # retention 24 months: January 2022 goes
    run("ensure_partitions", model=["chat.Message"], now="2022-01-15T00:00:00Z")
    sender = django_user_model.objects.create(username="sender")
    january = (utc(2022, 1, 1), utc(2022, 2, 1))
    Message.objects.bulk_create(
        Message(sender=sender, body=f"message {i}", created_at=utc(2022, 1, 1) + timedelta(minutes=40 * i))
        for i in range(1000)
    )
    connection.check_constraints()  # fire the deferred sender keys now, as a commit would in production
    original = list(Message.objects.filter(created_at__range=january).order_by("id").values_list())
    run("archive_partitions", model=["chat.Message"], now=now)
    assert not Message.objects.filter(created_at__range=january).exists()
    first = contents(archive_storage)

    Message.objects.create(sender=sender, body="late", created_at=utc(2022, 1, 31, 12))  # the default partition
    connection.check_constraints()
    run("ensure_partitions", model=["chat.Message"], now=now, rescue_default=True)
    assert "chat_message_p2022_01" in [p.name for p in partitions(connection, "chat_message")]
    expected = list(Message.objects.filter(created_at__range=january).order_by("id").values_list())
    assert len(expected) == 1
    expected = sorted(original + expected)
    run("archive_partitions", model=["chat.Message"], now=now)
    run("archive_partitions", model=["chat.Message"], now=now)

    after = contents(archive_storage)
    assert {name: after.get(name) for name in first} == first  # the 1,000-row archive is untouched
    manifest = latest_manifest(archive_storage, "chat_message_p2022_01", "scaleops-archive/default/chat_message")
    assert [a["rows"] for a in manifest["archives"]] == [1000, 1]
    out = run("restore_partition", "chat.Message", "chat_message_p2022_01")
    assert "restored 1001 rows into chat_message_p2022_01 from 2 archive object(s)" in out
    assert "Restored chat_message_p2022_01: 2 archive object(s), 1001 row(s) inserted, 0 already present." in out
    assert list(Message.objects.filter(created_at__range=january).order_by("id").values_list()) == expected
    run("restore_partition", "chat.Message", "chat_message_p2022_01")
    assert Message.objects.filter(created_at__range=january).count() == 1001


def test_version_1_archives_are_read_restored_and_extended(six_months_of_events, archive_storage):
    """Archives written before per-run objects: <partition>.csv.gz + <partition>.manifest.json."""
    name = "partitionapp_event_p2024_01"
    january = six_months_of_events[1]
    with (
        connection.cursor() as cursor,
        cursor.copy(
            f"COPY (SELECT id, name, created_at FROM {name} ORDER BY id, created_at) TO STDOUT WITH (FORMAT csv)"
        ) as copy,
    ):
        data = b"".join(bytes(chunk) for chunk in copy)
    legacy = {
        "model": "partitionapp.Event",
        "table": "partitionapp_event",
        "partition": name,
        "start": "2024-01-01T00:00:00+00:00",
        "end": "2024-02-01T00:00:00+00:00",
        "rows": len(january),
        "min_key": january[0][2].isoformat(),
        "max_key": january[-1][2].isoformat(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "columns": ["id", "name", "created_at"],
        "format": "csv",
        "compression": "gzip",
        "archived_at": "2024-05-01T00:00:00+00:00",
        "version": 1,
    }
    folder = archive_storage / FOLDER
    folder.mkdir(parents=True)
    (folder / f"{name}.csv.gz").write_bytes(gzip.compress(data))
    (folder / f"{name}.manifest.json").write_text(json.dumps(legacy))
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {name}")
    legacy_files = contents(archive_storage)

    listing = run("restore_partition", "partitionapp.Event", list=True)
    assert f"run {archive.LEGACY_RUN_ID}: {len(january)} rows, {name}.csv.gz" in listing
    out = run("restore_partition", "partitionapp.Event", name)
    assert f"read {name}.csv.gz: {len(january)} rows (checksum verified)" in out
    assert events_by_month()[1] == january
    # Unchanged since its restore, the partition goes again on its version-1 archive.
    out = run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z")
    assert f"{name} is already archived as {name}.csv.gz" in out
    assert {f: contents(archive_storage)[f] for f in legacy_files} == legacy_files
    assert not any(".manifest.0" in f and name in f for f in archived_files(archive_storage))
    # A late row re-creates the month: its archive is added to a version-2 manifest next to the old one.
    Event.objects.create(name="late", created_at=utc(2024, 1, 31))
    run("ensure_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z", rescue_default=True)
    run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z")
    manifest = latest_manifest(archive_storage, name)
    assert [(a["run_id"] == archive.LEGACY_RUN_ID, a["rows"]) for a in manifest["archives"]] == [
        (True, len(january)),
        (False, 1),
    ]
    assert {f: contents(archive_storage)[f] for f in legacy_files} == legacy_files
    run("restore_partition", "partitionapp.Event", name)
    assert len(events_by_month()[1]) == len(january) + 1


def test_restore_of_one_archive_then_all_never_duplicates_rows(six_months_of_events, archive_storage):
    name = "partitionapp_event_p2024_01"
    run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z")
    Event.objects.bulk_create(Event(name=f"late {i}", created_at=utc(2024, 1, 20, i)) for i in range(4))
    run("ensure_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z", rescue_default=True)
    run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z")
    first, second = latest_manifest(archive_storage, name)["archives"]
    assert (first["rows"], second["rows"]) == (len(six_months_of_events[1]), 4)

    out = run("restore_partition", "partitionapp.Event", name, archive=second["run_id"])
    assert "Restored partitionapp_event_p2024_01: 1 archive object(s), 4 row(s) inserted, 0 already present." in out
    assert len(events_by_month()[1]) == 4
    # The rest comes back; the four rows already there are skipped by primary key.
    out = run("restore_partition", "partitionapp.Event", name)
    total = first["rows"] + 4
    assert f"2 archive object(s), {first['rows']} row(s) inserted, 4 already present." in out
    assert len(events_by_month()[1]) == total
    out = run("restore_partition", "partitionapp.Event", name)
    assert f"0 row(s) inserted, {total} already present." in out
    assert len(events_by_month()[1]) == total
    assert len(set(Event.objects.values_list("id", flat=True))) == Event.objects.count()
    with pytest.raises(CommandError, match="has no archive run 'nope'"):
        run("restore_partition", "partitionapp.Event", name, archive="nope")


def test_ensure_partitions_never_reattaches_a_table_waiting_for_its_archive(
    six_months_of_events, archive_storage, monkeypatch
):
    name = "partitionapp_event_p2024_01"

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("killed during the export")

    monkeypatch.setattr(archive, "_export", killed)
    with pytest.raises(KeyboardInterrupt):
        run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z")
    monkeypatch.undo()
    assert [w.name for w in waiting_for_archive(connection, "partitionapp_event")] == [name]
    late = Event.objects.create(name="late", created_at=utc(2024, 1, 25))  # January is detached: default
    out = run("ensure_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z", rescue_default=True)
    assert f"skip {name} [2024-01-01 00:00, 2024-02-01 00:00) UTC: a detached table of that name is waiting" in out
    assert name not in [p.name for p in partitions(connection, "partitionapp_event")]
    assert [w.name for w in waiting_for_archive(connection, "partitionapp_event")] == [name]
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM partitionapp_event WHERE id = %s", [late.pk])
        assert cursor.fetchone()[0] == "partitionapp_event_default"
        cursor.execute(f"SELECT count(*) FROM {name}")
        assert cursor.fetchone()[0] == len(six_months_of_events[1])
    with pytest.raises(CommandError, match="waiting for archive_partitions"):
        run("restore_partition", "partitionapp.Event", name)
    from django_scaleops.partitioning import get_config
    from django_scaleops.partitioning.ddl import create_partition

    with pytest.raises(PartitioningError, match="never re-attached"):
        create_partition(
            get_config("partitionapp.Event"), name, utc(2024, 1, 1), utc(2024, 2, 1), using="default", batch_size=10
        )
    # Once the archive is finished, the month can come back for the late row, and gets its own archive.
    run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z")
    out = run("ensure_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z", rescue_default=True)
    assert f"create {name}" in out
    run("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z")
    assert [a["rows"] for a in latest_manifest(archive_storage, name)["archives"]] == [
        len(six_months_of_events[1]),
        1,
    ]


def test_an_existing_object_is_never_replaced_even_by_a_storage_that_overwrites(archive_storage):
    """Django's FileSystemStorage(allow_overwrite=True), like S3Storage's default, replaces on save."""
    stores = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        "partition_archive": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(archive_storage), "allow_overwrite": True},
        },
    }
    path = f"{FOLDER}/partitionapp_event_p2024_01.manifest.000001.json"
    with override_settings(STORAGES=stores):
        storage = storages["partition_archive"]
        archive._put(storage, path, io.BytesIO(b"first"), pause="")
        with pytest.raises(PartitioningError, match="already exists in the archive storage; archives are never"):
            archive._put(storage, path, io.BytesIO(b"second"), pause="")
    assert (archive_storage / path).read_bytes() == b"first"
