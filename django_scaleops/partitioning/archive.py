"""Retention with a verified archive: detach → COPY out → storage → read back and verify → drop.

Every step can be interrupted; a rerun picks up where the last one stopped, because each state is
visible from outside:

* a detached partition waiting for its archive carries the table comment ``scaleops:archiving``;
* the archive is ``<prefix>/<alias>/<table>/<partition>.csv.gz`` plus ``.manifest.json``, and the
  manifest is written only after the uploaded data read back with the right checksum, so a
  manifest means "archive complete";
* the table is dropped only after the archive verified again against the table itself.

Archive names are fixed per partition and overwritten, never renamed, so a rerun cannot leave a
second archive behind.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import IO

from django.core.files import File
from django.core.files.storage import Storage, storages
from django.db import IntegrityError, connections, transaction
from django.db.backends.utils import CursorWrapper

from django_scaleops.conf import conf
from django_scaleops.partitioning import intervals
from django_scaleops.partitioning.config import PartitionConfig
from django_scaleops.partitioning.ddl import bound_clause, columns, create_standalone
from django_scaleops.partitioning.errors import PartitioningError
from django_scaleops.partitioning.identifiers import check_identifier, pk_column, qn
from django_scaleops.partitioning.introspection import Partition, fetch, table_exists
from django_scaleops.partitioning.locks import maintenance_lock, read_partitions, run_with_lock_timeout

MARK = "scaleops:archiving"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Manifest:
    """What an archive holds; ``sha256`` is of the uncompressed CSV, rows ordered by primary key."""

    model: str
    table: str
    partition: str
    start: str | None
    end: str | None
    rows: int
    min_key: str | None
    max_key: str | None
    sha256: str
    columns: list[str]
    format: str = "csv"
    compression: str = "gzip"
    archived_at: str = ""
    version: int = 1

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        return cls(**json.loads(data))


def archive_storage() -> Storage:
    return storages[conf.SCALEOPS_PARTITION_ARCHIVE_STORAGE]


def archive_paths(using: str, table: str, partition: str) -> tuple[str, str]:
    check_identifier(using, "database alias")
    base = f"{conf.SCALEOPS_PARTITION_ARCHIVE_PREFIX.strip('/')}/{using}/{table}/{partition}"
    return f"{base}.csv.gz", f"{base}.manifest.json"


def read_manifest(storage: Storage, path: str) -> Manifest | None:
    if not storage.exists(path):
        return None
    with storage.open(path, "rb") as handle:
        return Manifest.from_json(handle.read())


def _replace(storage: Storage, path: str, content: IO[bytes]) -> None:
    """Write ``path`` exactly (Django storages rename on collision, which would duplicate archives)."""
    if storage.exists(path):
        storage.delete(path)
    saved = storage.save(path, File(content))
    if saved != path:
        storage.delete(saved)
        raise PartitioningError(f"the archive storage saved {path!r} as {saved!r}; refusing a second archive")


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
    with storage.open(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as data:
        while chunk := data.read(CHUNK):
            digest.update(chunk)
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
    rows = fetch(
        connections[using],
        "SELECT c.relname, d.description FROM pg_class c JOIN pg_description d"
        " ON d.objoid = c.oid AND d.classoid = 'pg_class'::regclass AND d.objsubid = 0"
        " WHERE c.relkind = 'r' AND d.description LIKE %s AND pg_table_is_visible(c.oid)",
        [f"{MARK} %"],
    )
    steps = []
    for name, comment in rows:
        _, table, start, end = comment.split(" ")
        if table != config.table:
            continue
        steps.append(
            ArchiveStep(
                config,
                name,
                None if start == "-" else datetime.fromisoformat(start),
                None if end == "-" else datetime.fromisoformat(end),
                "detached",
            )
        )
    return steps


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


def archive_partition(step: ArchiveStep, *, using: str, report: Callable[[str], None]) -> Manifest | None:
    """Run (or finish) the archive of one partition; returns its manifest (None if archive=False)."""
    config, name = step.config, step.partition
    with maintenance_lock(using, config.table):
        if step.state == "attached":
            _detach(step, using=using)
            report(f"{config.label}: detached {name}")
        if not table_exists(connections[using], name):
            return None
        if not config.archive:
            run_with_lock_timeout(using, lambda c: c.execute(f"DROP TABLE {qn(name)}"), what=f"drop {name}")
            report(f"{config.label}: dropped {name} (archive=False)")
            return None
        storage = archive_storage()
        data_path, manifest_path = archive_paths(using, config.table, name)
        cols = columns(using, name)
        manifest = read_manifest(storage, manifest_path)
        if manifest is None:
            manifest = _export(step, storage, data_path, manifest_path, cols, using=using)
            report(f"{config.label}: archived {name}: {manifest.rows} rows, sha256 {manifest.sha256[:12]}")
        else:
            report(f"{config.label}: {name} already has an archive; verifying it")
        # Only an archive that reads back right, for exactly this table's rows, lets the table go.
        rows, digest = table_digest(using, config, name, cols)
        if (rows, digest) != (manifest.rows, manifest.sha256) or stored_digest(storage, data_path) != digest:
            storage.delete(manifest_path)
            raise PartitioningError(
                f"{config.label}: the archive of {name} does not match the table (rows {rows} vs {manifest.rows});"
                " its manifest was removed so the next run exports it again. The table was kept."
            )
        drop_archived(using, name)
        report(f"{config.label}: verified and dropped {name}")
        return manifest


def drop_archived(using: str, name: str) -> None:
    """The last step, once the archive is verified: the detached table goes."""
    run_with_lock_timeout(using, lambda c: c.execute(f"DROP TABLE {qn(name)}"), what=f"drop {name}")


def _detach(step: ArchiveStep, *, using: str) -> None:
    config, name = step.config, step.partition
    comment = f"{MARK} {config.table} {step.start.isoformat() if step.start else '-'} "
    comment += step.end.isoformat() if step.end else "-"

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


def _export(
    step: ArchiveStep, storage: Storage, data_path: str, manifest_path: str, cols: list[str], *, using: str
) -> Manifest:
    config, name = step.config, step.partition
    digest = hashlib.sha256()
    key = qn(config.key_column)
    with tempfile.TemporaryFile() as spool:
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            cursor.execute(f"SELECT count(*), min({key}), max({key}) FROM {qn(name)}")
            rows, low, high = cursor.fetchone()
            with gzip.GzipFile(fileobj=spool, mode="wb", mtime=0) as packed:
                for chunk in copy_out(cursor, name, cols, _order(config)):
                    digest.update(chunk)
                    packed.write(chunk)
        spool.seek(0)
        _replace(storage, data_path, spool)
    if stored_digest(storage, data_path) != digest.hexdigest():
        storage.delete(data_path)
        raise PartitioningError(f"{config.label}: the uploaded archive of {name} read back differently; retry")
    manifest = Manifest(
        model=config.label,
        table=config.table,
        partition=name,
        start=step.start.isoformat() if step.start else None,
        end=step.end.isoformat() if step.end else None,
        rows=int(rows),
        min_key=low.isoformat() if low else None,
        max_key=high.isoformat() if high else None,
        sha256=digest.hexdigest(),
        columns=cols,
        archived_at=datetime.now(UTC).isoformat(),
    )
    with tempfile.TemporaryFile() as handle:
        handle.write(manifest.to_json())
        handle.seek(0)
        _replace(storage, manifest_path, handle)
    if read_manifest(storage, manifest_path) != manifest:
        storage.delete(manifest_path)
        raise PartitioningError(f"{config.label}: the manifest of {name} read back differently; retry")
    return manifest


def restore_partition(
    config: PartitionConfig, partition: str, *, using: str, attach: bool = True, report: Callable[[str], None]
) -> Manifest:
    """Bring an archived partition back (as a standalone table, attached unless ``attach=False``)."""
    check_identifier(partition, "partition name")
    storage = archive_storage()
    data_path, manifest_path = archive_paths(using, config.table, partition)
    manifest = read_manifest(storage, manifest_path)
    if manifest is None:
        raise PartitioningError(f"{config.label}: no archive of {partition!r} in storage (looked for {manifest_path})")
    start = datetime.fromisoformat(manifest.start) if manifest.start else None
    end = datetime.fromisoformat(manifest.end) if manifest.end else None
    with maintenance_lock(using, config.table):
        if table_exists(connections[using], partition):
            raise PartitioningError(f"{config.label}: a table named {partition!r} already exists; nothing restored")
        overlapping = [p.name for p in read_partitions(using, config.table) if _overlaps(p, start, end)]
        if attach and overlapping:
            raise PartitioningError(f"{config.label}: {', '.join(overlapping)} already covers that range")
        listed = ", ".join(qn(c) for c in manifest.columns)
        digest = hashlib.sha256()
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            create_standalone(cursor, config.table, partition, config.key_column, start, end)
            with (
                storage.open(data_path, "rb") as raw,
                gzip.GzipFile(fileobj=raw) as data,
                cursor.copy(f"COPY {qn(partition)} ({listed}) FROM STDIN WITH (FORMAT csv)") as copy,
            ):
                while chunk := data.read(CHUNK):
                    digest.update(chunk)
                    copy.write(chunk)
            if digest.hexdigest() != manifest.sha256:
                raise PartitioningError(f"{config.label}: the archive of {partition} does not match its manifest")
        rows, table_sha = table_digest(using, config, partition, manifest.columns)
        if (rows, table_sha) != (manifest.rows, manifest.sha256):
            run_with_lock_timeout(using, lambda c: c.execute(f"DROP TABLE {qn(partition)}"), what="drop")
            raise PartitioningError(f"{config.label}: restored {partition} differs from the archive; removed it")
        report(f"{config.label}: restored {rows} rows into {partition} (checksum verified)")
        if attach:
            run_with_lock_timeout(
                using,
                lambda c: c.execute(
                    f"ALTER TABLE {qn(config.table)} ATTACH PARTITION {qn(partition)} {bound_clause(start, end)}"
                ),
                what=f"attach {partition}",
            )
            report(f"{config.label}: attached {partition}")
    return manifest


def _overlaps(p: Partition, start: datetime | None, end: datetime | None) -> bool:
    low = start or datetime.min.replace(tzinfo=UTC)
    high = end or datetime.max.replace(tzinfo=UTC)
    return p.overlaps(low, high)


def list_archives(using: str, config: PartitionConfig) -> list[str]:
    storage = archive_storage()
    folder = f"{conf.SCALEOPS_PARTITION_ARCHIVE_PREFIX.strip('/')}/{using}/{config.table}"
    try:
        _, files = storage.listdir(folder)
    except (FileNotFoundError, NotImplementedError):
        return []
    return sorted(f[: -len(".manifest.json")] for f in files if f.endswith(".manifest.json"))
