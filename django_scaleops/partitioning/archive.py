"""Retention with verified, immutable archives.

detach → COPY out → upload a new object → read it back → list it in a new manifest generation →
verify the table against it → drop. Every step can be interrupted; a rerun finishes the job
because each state is visible from outside:

* a detached partition waiting for its archive carries the table comment ``scaleops:archiving``,
  and nothing re-attaches it (``ensure_partitions`` and ``restore_partition`` leave it alone);
* each archive run writes its own object, ``<partition>.<run id>.<sha256>.csv.gz``, next to the
  partition's manifest; no object is ever replaced or deleted (a write to an existing name is
  refused, whatever the storage's overwrite setting);
* the manifest of a partition is a series of generations, ``<partition>.manifest.<n>.json``, each
  written once and listing every archive of the partition so far; an archive counts only once a
  generation listing it has read back. The version-1 layout (``<partition>.csv.gz`` +
  ``<partition>.manifest.json``, one archive) is read as generation 0;
* the table is dropped only after its rows and checksum matched an archive the manifest lists,
  and that archive's object read back from storage with the same checksum.

An object no manifest lists is the leftover of an interrupted upload: kept, never read.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import IO, Any

from django.core.files import File
from django.core.files.storage import Storage, storages
from django.db import IntegrityError, connections, transaction
from django.db.backends.utils import CursorWrapper

from django_scaleops.conf import conf
from django_scaleops.partitioning import intervals
from django_scaleops.partitioning.config import PartitionConfig
from django_scaleops.partitioning.ddl import columns, create_partition, create_standalone
from django_scaleops.partitioning.errors import PartitioningError
from django_scaleops.partitioning.identifiers import check_identifier, pk_column, qn
from django_scaleops.partitioning.introspection import (
    ARCHIVE_MARK,
    Partition,
    archive_comment,
    table_exists,
    waiting_for_archive,
)
from django_scaleops.partitioning.locks import maintenance_lock, read_partitions, run_with_lock_timeout

MARK = ARCHIVE_MARK
CHUNK = 1 << 20
FORMAT_VERSION = 2
LEGACY_RUN_ID = "v1"  # the run id given to a version-1 archive when its manifest is read

# Test hook: SCALEOPS_ARCHIVE_TEST_PAUSE=<step> makes archive_partitions print a marker line on
# stderr at that step and wait there, so a test can SIGKILL it at an exact point.
PAUSE_ENV = "SCALEOPS_ARCHIVE_TEST_PAUSE"
PAUSE_MARKER = "scaleops-archive-paused:"
PAUSE_STEPS = (
    "detached",  # the detach committed
    "exporting",  # COPY out under way, the first rows spooled
    "uploading",  # half of the object written to storage
    "uploaded",  # the object written, not read back yet
    "manifest-writing",  # half of the new manifest generation written
    "manifest-written",  # the manifest generation written and read back
    "verified",  # the table matched the archive; not dropped yet
    "dropping",  # DROP TABLE run, its transaction not committed
)

_MANIFEST_NAME = re.compile(r"^(?P<partition>[A-Za-z_][A-Za-z0-9_]*)\.manifest(?:\.(?P<generation>\d+))?\.json$")


def _pause(step: str) -> None:
    if os.environ.get(PAUSE_ENV) != step:
        return
    sys.stderr.write(f"{PAUSE_MARKER} {step}\n")
    sys.stderr.flush()
    time.sleep(300)  # the test kills us long before; never hang a forgotten process for good
    os._exit(97)


@dataclass(frozen=True)
class ArchiveObject:
    """One archive run's object: the partition's rows as CSV ordered by primary key, gzipped.

    ``sha256`` is of the uncompressed CSV; ``name`` is the object's file name, in the folder of
    the manifest that lists it.
    """

    name: str
    run_id: str
    rows: int
    sha256: str
    min_key: str | None
    max_key: str | None
    columns: list[str]
    archived_at: str
    format: str = "csv"
    compression: str = "gzip"


@dataclass(frozen=True)
class Manifest:
    """Generation ``generation`` of a partition's manifest: every archive of it, oldest first."""

    model: str
    table: str
    partition: str
    start: str | None
    end: str | None
    archives: tuple[ArchiveObject, ...]
    generation: int
    written_at: str = ""
    version: int = FORMAT_VERSION

    @property
    def rows(self) -> int:
        return sum(a.rows for a in self.archives)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, *, generation: int) -> Manifest:
        raw: dict[str, Any] = json.loads(data)
        version = raw.get("version", 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise PartitioningError(
                f"manifest generation {generation} has format version {version!r}, newer than this"
                f" django-scaleops reads ({FORMAT_VERSION}); upgrade before archiving or restoring"
            )
        if version == 1:
            return cls._from_v1(raw)
        archives = tuple(ArchiveObject(**a) for a in raw.pop("archives"))
        manifest = cls(**raw, archives=archives)
        if manifest.generation != generation:
            raise ValueError(f"it says it is generation {manifest.generation}")
        return manifest

    @classmethod
    def _from_v1(cls, raw: dict[str, Any]) -> Manifest:
        """The version-1 manifest (one archive, ``<partition>.csv.gz``) as generation 0."""
        only = ArchiveObject(
            name=f"{raw['partition']}.csv.gz",
            run_id=LEGACY_RUN_ID,
            rows=int(raw["rows"]),
            sha256=str(raw["sha256"]),
            min_key=raw.get("min_key"),
            max_key=raw.get("max_key"),
            columns=list(raw["columns"]),
            archived_at=str(raw.get("archived_at", "")),
            format=str(raw.get("format", "csv")),
            compression=str(raw.get("compression", "gzip")),
        )
        return cls(
            model=str(raw["model"]),
            table=str(raw["table"]),
            partition=str(raw["partition"]),
            start=raw.get("start"),
            end=raw.get("end"),
            archives=(only,),
            generation=0,
            written_at=only.archived_at,
        )


@dataclass(frozen=True)
class ManifestState:
    """What storage holds for a partition: its latest readable manifest, the next generation
    number (never reused), and the generations that could not be read (an interrupted write)."""

    latest: Manifest | None
    next_generation: int
    unreadable: tuple[str, ...] = ()


def archive_storage() -> Storage:
    return storages[conf.SCALEOPS_PARTITION_ARCHIVE_STORAGE]


def archive_folder(using: str, table: str) -> str:
    check_identifier(using, "database alias")
    return f"{conf.SCALEOPS_PARTITION_ARCHIVE_PREFIX.strip('/')}/{using}/{table}"


def manifest_name(partition: str, generation: int) -> str:
    if generation == 0:
        return f"{partition}.manifest.json"  # the version-1 name
    return f"{partition}.manifest.{generation:06d}.json"


def _storage_failed(what: str, exc: Exception) -> PartitioningError:
    return PartitioningError(f"the archive storage failed to {what} ({type(exc).__name__}: {exc})")


def read_manifests(storage: Storage, folder: str, partition: str) -> ManifestState:
    """The partition's manifest generations, probed in order with ``exists()`` (no listing needed)."""
    latest: Manifest | None = None
    unreadable: list[str] = []
    generation = 0
    try:
        while True:
            path = f"{folder}/{manifest_name(partition, generation)}"
            if not storage.exists(path):
                if generation > 0:
                    break
            else:
                with storage.open(path, "rb") as handle:
                    data = handle.read()
                try:
                    manifest = Manifest.from_json(data, generation=generation)
                    if manifest.partition != partition:
                        raise ValueError(f"it is the manifest of {manifest.partition!r}")
                    latest = manifest
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    # A write cut short (or a stranger's file): later generations carry on without it.
                    unreadable.append(f"{path} ({type(exc).__name__}: {exc})")
            generation += 1
    except PartitioningError:
        raise
    except Exception as exc:
        raise _storage_failed(f"read the manifests of {partition}", exc) from exc
    return ManifestState(latest, generation, tuple(unreadable))


def read_manifest(storage: Storage, folder: str, partition: str) -> Manifest | None:
    """The latest readable manifest of ``partition`` (every archive of it), or None."""
    return read_manifests(storage, folder, partition).latest


class _PausingFile(File):  # type: ignore[type-arg]
    """Hands the storage the first half of the content, then pauses (the ``*-ing`` test steps)."""

    def __init__(self, content: IO[bytes], step: str) -> None:
        super().__init__(content)
        self.content = content
        self.step = step

    def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
        self.content.seek(0)
        data = self.content.read()
        yield data[: len(data) // 2]
        _pause(self.step)
        yield data[len(data) // 2 :]


def _put(storage: Storage, path: str, content: IO[bytes], *, pause: str) -> None:
    """Write a new object at exactly ``path``; an existing object there is never replaced."""
    try:
        if storage.exists(path):
            raise PartitioningError(f"{path} already exists in the archive storage; archives are never replaced")
        upload = _PausingFile(content, pause) if os.environ.get(PAUSE_ENV) == pause else File(content)
        saved = storage.save(path, upload)
    except PartitioningError:
        raise
    except Exception as exc:
        raise _storage_failed(f"write {path}", exc) from exc
    if saved != path:
        # Another object took the name meanwhile; ours went elsewhere and stays unlisted.
        raise PartitioningError(f"the archive storage saved {path} as {saved} (the name was taken); nothing replaced")


def _order(config: PartitionConfig) -> str:
    return f"{qn(pk_column(config.model))}, {qn(config.key_column)}"


def copy_out(cursor: CursorWrapper, table: str, cols: list[str], order: str) -> Iterator[bytes]:
    listed = ", ".join(qn(c) for c in cols)
    with cursor.copy(f"COPY (SELECT {listed} FROM {qn(table)} ORDER BY {order}) TO STDOUT WITH (FORMAT csv)") as copy:
        for chunk in copy:
            yield bytes(chunk)


def table_digest(using: str, config: PartitionConfig, table: str, cols: list[str]) -> tuple[int, str]:
    """Rows and sha256 of the table's CSV, as the archive would hold it."""
    digest = hashlib.sha256()
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {qn(table)}")
        rows = int(cursor.fetchone()[0])
        for chunk in copy_out(cursor, table, cols, _order(config)):
            digest.update(chunk)
    return rows, digest.hexdigest()


def stored_digest(storage: Storage, path: str) -> str:
    digest = hashlib.sha256()
    try:
        with storage.open(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as data:
            while chunk := data.read(CHUNK):
                digest.update(chunk)
    except Exception as exc:
        raise _storage_failed(f"read {path} back", exc) from exc
    return digest.hexdigest()


@dataclass
class ArchiveStep:
    config: PartitionConfig
    partition: str
    start: datetime | None
    end: datetime | None
    state: str  # "attached" | "detached"

    def describe(self) -> str:
        span = f"[{_fmt(self.start)}, {_fmt(self.end)})"
        if self.state == "attached":
            return f"{self.config.label}: archive {self.partition} {span}: detach, export, verify, drop"
        return f"{self.config.label}: finish archiving detached {self.partition} {span}"


def _fmt(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d") if value else "-inf"


def _detached(using: str, config: PartitionConfig) -> list[ArchiveStep]:
    return [
        ArchiveStep(config, w.name, w.start, w.end, "detached")
        for w in waiting_for_archive(connections[using], config.table)
    ]


def plan_archive(config: PartitionConfig, *, using: str, now: datetime) -> list[ArchiveStep]:
    """Partitions past the retention (and detached ones a previous run left), oldest first."""
    steps = _detached(using, config)
    if config.retention is not None:
        cutoff = intervals.add(intervals.floor(now, config.interval), config.interval, -config.retention)
        steps += [
            ArchiveStep(config, p.name, p.start, p.end, "attached")
            for p in read_partitions(using, config.table)
            if not p.is_default and p.end is not None and p.end <= cutoff
        ]
    return sorted(steps, key=lambda s: (s.start or datetime.min.replace(tzinfo=UTC), s.partition))


def _state_now(using: str, config: PartitionConfig, name: str) -> str:
    """Under the maintenance lock: "attached", "detached" (waiting for its archive) or "gone"."""
    if any(p.name == name for p in read_partitions(using, config.table)):
        return "attached"
    if any(w.name == name for w in waiting_for_archive(connections[using], config.table)):
        return "detached"
    return "gone"


def new_run_id() -> str:
    """Sortable by time, unique by its random part: ``20260115T031500123456Z-1f2e3d4c``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(4)}"


def archive_partition(step: ArchiveStep, *, using: str, report: Callable[[str], None]) -> ArchiveObject | None:
    """Run (or finish) the archive of one partition; returns the archive that holds its rows
    (None if archive=False or the partition was already gone)."""
    config, name = step.config, step.partition
    with maintenance_lock(using, config.table):
        state = _state_now(using, config, name)
        if state == "gone":
            report(f"{config.label}: {name} is no longer there (archived by another run?); skipped")
            return None
        if state == "attached":
            _detach(step, using=using)
            report(f"{config.label}: detached {name}")
            _pause("detached")
        if not config.archive:
            run_with_lock_timeout(using, lambda c: c.execute(f"DROP TABLE {qn(name)}"), what=f"drop {name}")
            report(f"{config.label}: dropped {name} (archive=False)")
            return None
        storage = archive_storage()
        folder = archive_folder(using, config.table)
        cols = columns(using, name)
        manifests = read_manifests(storage, folder, name)
        for problem in manifests.unreadable:
            report(f"{config.label}: WARNING: skipped an unreadable manifest generation {problem}")
        archived = _archived_already(config, name, cols, storage, folder, manifests.latest, using=using, report=report)
        if archived is None:
            archived = _export(step, storage, folder, cols, using=using)
            report(
                f"{config.label}: archived {name}: {archived.rows} rows, sha256 {archived.sha256[:12]},"
                f" object {archived.name}"
            )
            manifest = _record(step, storage, folder, manifests, archived)
            report(
                f"{config.label}: manifest {manifest_name(name, manifest.generation)} lists"
                f" {len(manifest.archives)} archive(s) of {name}"
            )
            _pause("manifest-written")
        # Only an archive that holds exactly this table's rows lets the table go.
        rows, digest = table_digest(using, config, name, cols)
        if (rows, digest) != (archived.rows, archived.sha256):
            raise PartitioningError(
                f"{config.label}: {name} changed while it was archived (rows {rows} vs {archived.rows} in"
                f" {archived.name}); the table was kept and the archive stays. Rerun to archive it again"
            )
        _pause("verified")
        drop_archived(using, name)
        report(f"{config.label}: verified and dropped {name}")
        return archived


def _archived_already(
    config: PartitionConfig,
    name: str,
    cols: list[str],
    storage: Storage,
    folder: str,
    manifest: Manifest | None,
    *,
    using: str,
    report: Callable[[str], None],
) -> ArchiveObject | None:
    """A listed archive holding exactly the table's rows (a run stopped before its drop, or a
    restored partition unchanged since), after it read back right from storage."""
    if manifest is None:
        return None
    with connections[using].cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {qn(name)}")
        rows = int(cursor.fetchone()[0])
    candidates = [a for a in reversed(manifest.archives) if a.rows == rows and a.columns == cols]
    if not candidates:
        return None  # e.g. a month re-created after its archive: its rows get an archive of their own
    _, digest = table_digest(using, config, name, cols)
    for candidate in candidates:
        if candidate.sha256 != digest:
            continue
        report(f"{config.label}: {name} is already archived as {candidate.name}; verifying it in storage")
        try:
            if stored_digest(storage, f"{folder}/{candidate.name}") == digest:
                return candidate
            problem = "its content no longer matches its checksum"
        except PartitioningError as exc:
            problem = str(exc)
        report(f"{config.label}: WARNING: {candidate.name}: {problem}; writing a new archive instead")
    return None


def drop_archived(using: str, name: str) -> None:
    """The last step, once the archive is verified: the detached table goes."""

    def work(cursor: CursorWrapper) -> None:
        cursor.execute(f"DROP TABLE {qn(name)}")
        _pause("dropping")

    run_with_lock_timeout(using, work, what=f"drop {name}")


def _detach(step: ArchiveStep, *, using: str) -> None:
    config, name = step.config, step.partition
    comment = archive_comment(config.table, step.start, step.end)

    def work(cursor: CursorWrapper) -> None:
        cursor.execute(f"ALTER TABLE {qn(config.table)} DETACH PARTITION {qn(name)}")
        cursor.execute(f"COMMENT ON TABLE {qn(name)} IS %s", [comment])

    try:
        run_with_lock_timeout(using, work, what=f"detach {name}")
    except IntegrityError as exc:
        raise PartitioningError(
            f"{config.label}: {name} still has rows that other tables reference ({exc}); archive the"
            " referencing partitions first (give them the same or a shorter retention)"
        ) from exc


def _export(step: ArchiveStep, storage: Storage, folder: str, cols: list[str], *, using: str) -> ArchiveObject:
    """COPY the table out into a new object of its own, read back with the right checksum."""
    config, name = step.config, step.partition
    digest = hashlib.sha256()
    key = qn(config.key_column)
    run_id = new_run_id()
    with tempfile.TemporaryFile() as spool:
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            cursor.execute(f"SELECT count(*), min({key}), max({key}) FROM {qn(name)}")
            rows, low, high = cursor.fetchone()
            with gzip.GzipFile(fileobj=spool, mode="wb", mtime=0) as packed:
                for index, chunk in enumerate(copy_out(cursor, name, cols, _order(config))):
                    digest.update(chunk)
                    packed.write(chunk)
                    if index == 0:
                        _pause("exporting")
        sha = digest.hexdigest()
        # The name carries the run id (unique) and the checksum (what it must read back as).
        object_name = f"{name}.{run_id}.{sha}.csv.gz"
        spool.seek(0)
        _put(storage, f"{folder}/{object_name}", spool, pause="uploading")
    _pause("uploaded")
    if stored_digest(storage, f"{folder}/{object_name}") != sha:
        raise PartitioningError(
            f"{config.label}: the uploaded archive {object_name} read back differently; it stays unlisted"
            f" (never read) and {name} was kept. Rerun to write a new one"
        )
    return ArchiveObject(
        name=object_name,
        run_id=run_id,
        rows=int(rows),
        sha256=sha,
        min_key=low.isoformat() if low else None,
        max_key=high.isoformat() if high else None,
        columns=cols,
        archived_at=datetime.now(UTC).isoformat(),
    )


def _record(
    step: ArchiveStep, storage: Storage, folder: str, manifests: ManifestState, archived: ArchiveObject
) -> Manifest:
    """A new manifest generation: the archives the latest one lists, plus ``archived``."""
    config, name = step.config, step.partition
    previous = manifests.latest.archives if manifests.latest else ()
    manifest = Manifest(
        model=config.label,
        table=config.table,
        partition=name,
        start=step.start.isoformat() if step.start else None,
        end=step.end.isoformat() if step.end else None,
        archives=(*previous, archived),
        generation=manifests.next_generation,
        written_at=datetime.now(UTC).isoformat(),
    )
    path = f"{folder}/{manifest_name(name, manifest.generation)}"
    _put(storage, path, io.BytesIO(manifest.to_json()), pause="manifest-writing")
    try:
        with storage.open(path, "rb") as handle:
            readback = Manifest.from_json(handle.read(), generation=manifest.generation)
    except (ValueError, TypeError, KeyError, AttributeError):
        readback = None
    except Exception as exc:
        raise _storage_failed(f"read {path} back", exc) from exc
    if readback != manifest:
        raise PartitioningError(
            f"{config.label}: the manifest {path} read back differently; {name} was kept. Rerun to write"
            " the next generation"
        )
    return manifest


# ---- restore -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreResult:
    """What ``restore_partition`` did: the archive objects it read, and the rows it put back."""

    partition: str
    target: str  # the table the rows went into: the partitioned table, or a standalone one
    objects: tuple[str, ...]
    rows_read: int
    rows_inserted: int

    @property
    def rows_present(self) -> int:
        """Archived rows whose primary key was already there (or in a newer archive): skipped."""
        return self.rows_read - self.rows_inserted


def restore_partition(
    config: PartitionConfig,
    partition: str,
    *,
    using: str,
    attach: bool = True,
    run_id: str | None = None,
    report: Callable[[str], None],
) -> RestoreResult:
    """Bring back every archive of ``partition`` (or only run ``run_id``), never duplicating a row.

    Each archive is first read into a temporary table and checked (checksum of the data, then
    rows and checksum as the database holds them); nothing is changed if one fails. Then, in one
    transaction, each archive's rows are inserted, newest archive first, skipping every row whose
    primary key (pk, partition key) is already there: restoring twice, or after some rows came
    back, adds nothing twice, and a row found in several archives comes back in its newest version.

    With ``attach`` the rows go into the partitioned table, into the partition of that range (made
    if missing, as ``ensure_partitions`` does); without, into a new standalone table named
    ``partition``.
    """
    check_identifier(partition, "partition name")
    storage = archive_storage()
    folder = archive_folder(using, config.table)
    connection = connections[using]
    with maintenance_lock(using, config.table):
        if any(w.name == partition for w in waiting_for_archive(connection, config.table)):
            raise PartitioningError(
                f"{config.label}: {partition} is detached and waiting for archive_partitions; run"
                " archive_partitions to finish its archive, then restore. Nothing restored"
            )
        state = read_manifests(storage, folder, partition)
        for problem in state.unreadable:
            report(f"{config.label}: WARNING: skipped an unreadable manifest generation {problem}")
        manifest = state.latest
        if manifest is None:
            raise PartitioningError(
                f"{config.label}: no archive of {partition!r} in storage"
                f" (looked for {folder}/{partition}.manifest*.json)"
            )
        chosen = list(reversed(manifest.archives))  # newest first: its version of a row wins
        if run_id is not None:
            chosen = [a for a in chosen if a.run_id == run_id]
            if not chosen:
                runs = ", ".join(a.run_id for a in manifest.archives)
                raise PartitioningError(f"{config.label}: {partition} has no archive run {run_id!r} (its runs: {runs})")
        start = datetime.fromisoformat(manifest.start) if manifest.start else None
        end = datetime.fromisoformat(manifest.end) if manifest.end else None
        existing = read_partitions(using, config.table)
        same = next((p for p in existing if not p.is_default and (p.start, p.end) == (start, end)), None)
        if attach:
            overlapping = [p.name for p in existing if p is not same and _overlaps(p, start, end)]
            if overlapping:
                raise PartitioningError(
                    f"{config.label}: {', '.join(overlapping)} already covers part of that range; nothing restored"
                )
        if (not attach or same is None) and table_exists(connection, partition):
            raise PartitioningError(f"{config.label}: a table named {partition!r} already exists; nothing restored")
        staged: list[tuple[ArchiveObject, str]] = []
        try:
            _stage_all(config, storage, folder, chosen, staged, using=using, report=report)
            if attach and same is None:
                moved = create_partition(
                    config, partition, start, end, using=using, batch_size=conf.SCALEOPS_PARTITION_BATCH_SIZE
                )
                report(
                    f"{config.label}: attached {partition}" + (f" (moved {moved} rows from default)" if moved else "")
                )
            target = config.table if attach else partition
            inserted = run_with_lock_timeout(
                using,
                lambda cursor: _insert_staged(cursor, config, staged, target, attach, start, end, partition),
                what=f"restore rows into {target}",
            )
        finally:
            with connection.cursor() as cursor:
                for _, stage in staged:
                    cursor.execute(f"DROP TABLE IF EXISTS pg_temp.{qn(stage)}")
    result = RestoreResult(
        partition=partition,
        target=same.name if attach and same is not None else partition,
        objects=tuple(a.name for a, _ in staged),
        rows_read=sum(a.rows for a, _ in staged),
        rows_inserted=inserted,
    )
    report(
        f"{config.label}: restored {result.rows_inserted} rows into {result.target} from"
        f" {len(result.objects)} archive object(s) ({result.rows_read} rows read,"
        f" {result.rows_present} already present and skipped by primary key)"
    )
    return result


def _stage_all(
    config: PartitionConfig,
    storage: Storage,
    folder: str,
    chosen: list[ArchiveObject],
    staged: list[tuple[ArchiveObject, str]],
    *,
    using: str,
    report: Callable[[str], None],
) -> None:
    """Read each archive into a checked temporary table; archives with the same checksum hold the
    same rows, so one of them (the first that reads back right) is enough."""
    groups: dict[str, list[ArchiveObject]] = {}
    for archived in chosen:
        groups.setdefault(archived.sha256, []).append(archived)
    for copies in groups.values():
        problems = []
        for archived in copies:
            stage = f"scaleops_restore_{len(staged)}"
            try:
                _stage(config, storage, folder, archived, stage, using=using)
            except PartitioningError as exc:
                problems.append(str(exc))
                with connections[using].cursor() as cursor:
                    cursor.execute(f"DROP TABLE IF EXISTS pg_temp.{qn(stage)}")
                continue
            staged.append((archived, stage))
            report(f"{config.label}: read {archived.name}: {archived.rows} rows (checksum verified)")
            for other in copies:
                if other is not archived:
                    report(f"{config.label}: {other.name} holds the same rows (same checksum); not read again")
            break
        else:
            raise PartitioningError("; ".join(problems) + ". Nothing was restored")


def _stage(
    config: PartitionConfig, storage: Storage, folder: str, archived: ArchiveObject, stage: str, *, using: str
) -> None:
    listed = ", ".join(qn(c) for c in archived.columns)
    path = f"{folder}/{archived.name}"
    digest = hashlib.sha256()
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS pg_temp.{qn(stage)}")
        cursor.execute(f"CREATE TEMPORARY TABLE {qn(stage)} (LIKE {qn(config.table)} INCLUDING DEFAULTS)")
        try:
            with (
                storage.open(path, "rb") as raw,
                gzip.GzipFile(fileobj=raw) as data,
                cursor.copy(f"COPY pg_temp.{qn(stage)} ({listed}) FROM STDIN WITH (FORMAT csv)") as copy,
            ):
                while chunk := data.read(CHUNK):
                    digest.update(chunk)
                    copy.write(chunk)
        except Exception as exc:
            # A missing or cut-short object, or CSV the table refuses: this archive is not restorable.
            raise PartitioningError(f"{config.label}: could not read {path} ({type(exc).__name__}: {exc})") from exc
        if digest.hexdigest() != archived.sha256:
            raise PartitioningError(f"{config.label}: {path} does not match its manifest (checksum)")
    # As the database holds them, the rows must give back the very same CSV.
    rows, sha = table_digest(using, config, stage, archived.columns)
    if (rows, sha) != (archived.rows, archived.sha256):
        raise PartitioningError(f"{config.label}: {path} read into the database differently (rows {rows})")


def _insert_staged(
    cursor: CursorWrapper,
    config: PartitionConfig,
    staged: list[tuple[ArchiveObject, str]],
    target: str,
    attach: bool,
    start: datetime | None,
    end: datetime | None,
    partition: str,
) -> int:
    pk, key = qn(pk_column(config.model)), qn(config.key_column)
    if not attach:
        create_standalone(cursor, config.table, partition, config.key_column, start, end)
    inserted = 0
    for archived, stage in staged:
        listed = ", ".join(qn(c) for c in archived.columns)
        select = f"SELECT {listed} FROM pg_temp.{qn(stage)} s"
        if attach:
            # The partitioned table's primary key (pk, key) decides: a row already there stays as is.
            cursor.execute(f"INSERT INTO {qn(target)} ({listed}) {select} ON CONFLICT DO NOTHING")
        else:
            cursor.execute(
                f"INSERT INTO {qn(target)} ({listed}) {select} WHERE NOT EXISTS"
                f" (SELECT 1 FROM {qn(target)} t WHERE t.{pk} = s.{pk} AND t.{key} = s.{key})"
            )
        inserted += max(cursor.rowcount, 0)
    for archived, stage in staged:
        cursor.execute(
            f"SELECT count(*) FROM pg_temp.{qn(stage)} s WHERE NOT EXISTS"
            f" (SELECT 1 FROM {qn(target)} t WHERE t.{pk} = s.{pk} AND t.{key} = s.{key})"
        )
        missing = int(cursor.fetchone()[0])
        if missing:
            raise PartitioningError(
                f"{config.label}: {missing} rows of {archived.name} are not in {target} after the restore;"
                " rolled back, nothing restored"
            )
    return inserted


def _overlaps(p: Partition, start: datetime | None, end: datetime | None) -> bool:
    low = start or datetime.min.replace(tzinfo=UTC)
    high = end or datetime.max.replace(tzinfo=UTC)
    return p.overlaps(low, high)


def list_archives(using: str, config: PartitionConfig) -> list[Manifest]:
    """The latest manifest of every archived partition of ``config``, by partition name."""
    storage = archive_storage()
    folder = archive_folder(using, config.table)
    try:
        _, files = storage.listdir(folder)
    except (FileNotFoundError, NotImplementedError):
        return []
    except Exception as exc:
        raise _storage_failed(f"list {folder}", exc) from exc
    found = sorted({m["partition"] for m in (_MANIFEST_NAME.match(f) for f in files) if m})
    manifests = [read_manifest(storage, folder, name) for name in found]
    return [m for m in manifests if m is not None]
