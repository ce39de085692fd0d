"""The archive survives being killed at every step, and storage that fails on write.

``manage.py archive_partitions`` runs in a subprocess against the test database (committed
rows, ``transaction=True``). ``SCALEOPS_ARCHIVE_TEST_PAUSE=<step>`` makes it print a marker at
that step and wait; the test sends a real SIGKILL there, reruns the command, and checks: no row
lost at the kill, every original row exactly once across the table and the listed archives after
the rerun, no archive object replaced, and restore bringing back exactly the original rows.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.files.storage import storages
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import override_settings

from django_scaleops.partitioning import archive
from django_scaleops.partitioning.identifiers import qn
from django_scaleops.partitioning.introspection import partitions, table_exists, waiting_for_archive
from tests.partitionapp.models import Event

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
TABLE = "partitionapp_event"
FOLDER = f"scaleops-archive/default/{TABLE}"
JANUARY, FEBRUARY = f"{TABLE}_p2024_01", f"{TABLE}_p2024_02"
NOW = "2024-06-15T00:00:00Z"  # retention 3: January and February go, March stays

Row = tuple[str, ...]


def utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def run(command: str, *args: str, **options) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out, **options)
    return out.getvalue()


def storage_settings(location: Path, backend: str = "django.core.files.storage.FileSystemStorage", **options):
    return {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        "partition_archive": {"BACKEND": backend, "OPTIONS": {"location": str(location), **options}},
    }


@pytest.fixture
def archive_dir(tmp_path: Path) -> Iterator[Path]:
    with override_settings(STORAGES=storage_settings(tmp_path), SCALEOPS_PARTITION_ARCHIVE_STORAGE="partition_archive"):
        yield tmp_path


@pytest.fixture(autouse=True)
def committed_cleanup() -> Iterator[None]:
    yield
    with connection.cursor() as cursor:
        for partition in partitions(connection, TABLE):
            if not partition.is_default:
                cursor.execute(f"DROP TABLE {qn(partition.name)}")
        for waiting in waiting_for_archive(connection, TABLE):
            cursor.execute(f"DROP TABLE {qn(waiting.name)}")
        for name in (JANUARY, FEBRUARY):
            cursor.execute(f"DROP TABLE IF EXISTS {qn(name)}")
        cursor.execute(f"DELETE FROM {qn(TABLE)}")


def db_rows(table: str = TABLE) -> list[Row]:
    if not table_exists(connection, table):
        return []
    out = io.BytesIO()
    with (
        connection.cursor() as cursor,
        cursor.copy(f"COPY (SELECT id, name, created_at FROM {qn(table)}) TO STDOUT (FORMAT csv)") as copy,
    ):
        for chunk in copy:
            out.write(bytes(chunk))
    return [tuple(r) for r in csv.reader(io.StringIO(out.getvalue().decode()))]


def listed_archives(root: Path, partition: str) -> list[archive.ArchiveObject]:
    manifest = archive.read_manifest(storages["partition_archive"], FOLDER, partition)
    return list(manifest.archives) if manifest else []


def archive_rows(root: Path, archived: archive.ArchiveObject) -> list[Row]:
    """The rows of a listed archive, after checking the object against its name and manifest."""
    data = gzip.decompress((root / FOLDER / archived.name).read_bytes())
    sha = hashlib.sha256(data).hexdigest()
    assert sha == archived.sha256
    assert archived.name.endswith(f".{sha}.csv.gz") or archived.run_id == archive.LEGACY_RUN_ID
    picked = [archived.columns.index(c) for c in ("id", "name", "created_at")]
    rows = [tuple(r[i] for i in picked) for r in csv.reader(io.StringIO(data.decode()))]
    assert len(rows) == archived.rows
    return rows


def everywhere(root: Path) -> Counter[Row]:
    """Every row: in the partitioned table, in tables waiting for their archive, in listed archives."""
    found: Counter[Row] = Counter(db_rows())
    for waiting in waiting_for_archive(connection, TABLE):
        found.update(db_rows(waiting.name))
    for partition in (JANUARY, FEBRUARY):
        for archived in listed_archives(root, partition):
            found.update(archive_rows(root, archived))
    return found


def objects(root: Path) -> dict[str, str]:
    """Every object in the archive storage, with the sha256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def fill_with_a_rearchived_month() -> list[Row]:
    """January archived once (12 rows), then 3 late January rows rescued into a re-created January;
    February (8 rows) not archived yet. Archiving at NOW adds January's second archive, then February's.
    Returns the late rows."""
    run("ensure_partitions", model=["partitionapp.Event"], now=NOW, since="2024-01-01")

    def event(i: int, at: datetime) -> Event:
        # Quotes, commas and newlines: the CSV must carry them through exactly.
        return Event(name=f'e{i}, "quoted"\nline' if i % 5 == 0 else f"e{i}", created_at=at)

    Event.objects.bulk_create(event(i, utc(2024, 1, 1) + timedelta(hours=50 * i)) for i in range(12))
    Event.objects.bulk_create(event(100 + i, utc(2024, 2, 2) + timedelta(hours=60 * i)) for i in range(8))
    Event.objects.bulk_create(event(200 + i, utc(2024, 3, 2) + timedelta(hours=70 * i)) for i in range(5))
    run("archive_partitions", model=["partitionapp.Event"], now="2024-05-15T00:00:00Z")  # January only
    assert not table_exists(connection, JANUARY)
    Event.objects.bulk_create(event(300 + i, utc(2024, 1, 20, i)) for i in range(3))  # into the default partition
    run("ensure_partitions", model=["partitionapp.Event"], now=NOW, rescue_default=True)
    assert JANUARY in [p.name for p in partitions(connection, TABLE)]
    late = db_rows(JANUARY)
    assert len(late) == 3
    return late


def manage(root: Path, *args: str, pause: str | None = None) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.partitionapp.subprocess_settings",
        "SCALEOPS_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "SCALEOPS_TEST_ARCHIVE_DIR": str(root),
    }
    env.pop(archive.PAUSE_ENV, None)
    if pause:
        env[archive.PAUSE_ENV] = pause
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_at(root: Path, step: str) -> str:
    """Run archive_partitions until it pauses at ``step``, then SIGKILL it; returns what it printed."""
    proc = manage(root, "archive_partitions", "--model", "partitionapp.Event", "--now", NOW, pause=step)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    try:
        while True:
            line = lines.get(timeout=60)
            if line is None:
                pytest.fail(f"archive_partitions ended before pausing at {step!r}:\n{''.join(seen)}")
            seen.append(line)
            if line.strip() == f"{archive.PAUSE_MARKER} {step}":
                break
        proc.send_signal(signal.SIGKILL)
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return stdout


def rerun(root: Path) -> str:
    proc = manage(root, "archive_partitions", "--model", "partitionapp.Event", "--now", NOW)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"{stdout}\n{stderr}"
    return stdout


@pytest.mark.parametrize("step", archive.PAUSE_STEPS)
def test_killed_at_any_step_the_rerun_finishes_with_exactly_the_original_rows(archive_dir: Path, step: str):
    late = fill_with_a_rearchived_month()
    original = everywhere(archive_dir)
    assert sum(original.values()) == 12 + 8 + 5 + 3
    before = objects(archive_dir)

    kill_at(archive_dir, step)
    # Killed: no row lost (January's late rows are still in its detached table), nothing replaced.
    at_kill = objects(archive_dir)
    assert {name: at_kill.get(name) for name in before} == before
    assert [w.name for w in waiting_for_archive(connection, TABLE)] == [JANUARY]
    assert sorted(db_rows(JANUARY)) == sorted(late)
    assert not original - everywhere(archive_dir)

    out = rerun(archive_dir)
    assert "Archived 2 partition(s)" in out
    if step in ("manifest-written", "verified", "dropping"):
        # The archive was complete: the rerun verifies it and drops, writing nothing new for January.
        assert f"{JANUARY} is already archived as" in out
    if step == "manifest-writing":
        assert "WARNING: skipped an unreadable manifest generation" in out
    after = objects(archive_dir)
    assert {name: after.get(name) for name in at_kill} == at_kill  # orphans of the kill included
    assert waiting_for_archive(connection, TABLE) == []
    assert not table_exists(connection, JANUARY)
    assert not table_exists(connection, FEBRUARY)
    assert everywhere(archive_dir) == original  # every row exactly once: table + listed archives
    assert len(listed_archives(archive_dir, JANUARY)) == 2
    assert len(listed_archives(archive_dir, FEBRUARY)) == 1

    for name in (JANUARY, FEBRUARY):
        run("restore_partition", "partitionapp.Event", name)
    assert Counter(db_rows()) == original
    again = run("restore_partition", "partitionapp.Event", JANUARY)
    assert "0 row(s) inserted, 15 already present" in again
    assert Counter(db_rows()) == original


@pytest.mark.parametrize(
    ("fail_on", "partial"),
    [(".csv.gz", False), (".csv.gz", True), (".manifest.", False), (".manifest.", True)],
    ids=["object", "object-half-written", "manifest", "manifest-half-written"],
)
def test_storage_failing_on_write_loses_nothing(archive_dir: Path, fail_on: str, partial: bool):
    fill_with_a_rearchived_month()
    original = everywhere(archive_dir)
    before = objects(archive_dir)
    failing = storage_settings(
        archive_dir, "tests.partitionapp.storage.FailingStorage", fail_on=fail_on, partial=partial
    )
    with override_settings(STORAGES=failing), pytest.raises(CommandError, match="simulated storage failure"):
        run("archive_partitions", model=["partitionapp.Event"], now=NOW)
    # January is detached, whole, and waits; its first archive is untouched.
    assert [w.name for w in waiting_for_archive(connection, TABLE)] == [JANUARY]
    assert len(db_rows(JANUARY)) == 3
    at_failure = objects(archive_dir)
    assert {name: at_failure.get(name) for name in before} == before
    assert everywhere(archive_dir) == original
    assert len(listed_archives(archive_dir, JANUARY)) == 1

    out = run("archive_partitions", model=["partitionapp.Event"], now=NOW)  # the storage works again
    assert "Archived 2 partition(s)" in out
    after = objects(archive_dir)
    assert {name: after.get(name) for name in at_failure} == at_failure
    assert everywhere(archive_dir) == original
    for name in (JANUARY, FEBRUARY):
        run("restore_partition", "partitionapp.Event", name)
    assert Counter(db_rows()) == original
