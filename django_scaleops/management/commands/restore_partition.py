"""Bring an archived partition back from the archive storage."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_scaleops.partitioning.archive import list_archives, restore_partition
from django_scaleops.partitioning.commands import resolve
from django_scaleops.partitioning.errors import PartitioningError


class Command(BaseCommand):
    help = (
        "Restore the archives of a partition (all of them, or one with --archive), verifying each checksum,"
        " into the partitioned table. Rows whose primary key is already there are skipped, so restoring"
        " twice adds nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", metavar="APP.MODEL")
        parser.add_argument("partition", nargs="?", help="partition name, e.g. chat_message_p2024_01")
        parser.add_argument("--database", default="default")
        parser.add_argument("--list", action="store_true", help="list the archived partitions and their archives")
        parser.add_argument(
            "--archive", default=None, metavar="RUN_ID", help="restore only this archive run (see --list)"
        )
        parser.add_argument("--no-attach", action="store_true", help="restore as a standalone table, for inspection")

    def handle(self, *args: Any, **options: Any) -> None:
        configs, using, _ = resolve({**options, "model": [options["model"]]})
        config = configs[0]
        try:
            if options["list"] or not options["partition"]:
                manifests = list_archives(using, config)
                names = ", ".join(m.partition for m in manifests)
                self.stdout.write(f"Archived partitions of {config.label}: {names or 'none'}")
                for manifest in manifests:
                    self.stdout.write(
                        f"  {manifest.partition} [{manifest.start or '-inf'}, {manifest.end or '+inf'}):"
                        f" {len(manifest.archives)} archive(s), {manifest.rows} rows"
                    )
                    for archived in manifest.archives:
                        self.stdout.write(
                            f"    run {archived.run_id}: {archived.rows} rows, {archived.name}"
                            f" (archived {archived.archived_at or 'at an unknown time'})"
                        )
                return
            result = restore_partition(
                config,
                options["partition"],
                using=using,
                attach=not options["no_attach"],
                run_id=options["archive"],
                report=lambda line: self.stdout.write(f"  {line}"),
            )
        except PartitioningError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Restored {result.partition}: {len(result.objects)} archive object(s), {result.rows_inserted}"
                f" row(s) inserted, {result.rows_present} already present."
            )
        )
