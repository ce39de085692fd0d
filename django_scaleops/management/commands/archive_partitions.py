"""Archive partitions older than their model's retention, then drop them."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_scaleops.partitioning.archive import archive_partition, plan_archive
from django_scaleops.partitioning.commands import add_common_arguments, resolve
from django_scaleops.partitioning.errors import PartitioningError
from django_scaleops.progress import ProgressBar


class Command(BaseCommand):
    help = (
        "For partitions older than the retention: detach, COPY out compressed into a new object of the"
        " archive storage (never replacing one), read it back, list it in the partition's manifest, verify"
        " the table against it, then drop. Resumable: rerun after any interruption."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_common_arguments(parser)
        parser.add_argument("--dry-run", action="store_true", help="show what would be archived, change nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        configs, using, now = resolve(options)
        steps = [s for c in configs for s in plan_archive(c, using=using, now=now)]
        self.stdout.write(f"Archive plan on {using!r}, now = {now.isoformat()}:")
        if not steps:
            self.stdout.write("  nothing to archive")
            return
        for step in steps:
            self.stdout.write(f"  {step.describe()}")
        if options["dry_run"]:
            self.stdout.write("Dry run: nothing was changed.")
            return
        done = 0
        with ProgressBar(self.stdout, len(steps), label="partitions") as bar:
            for step in steps:
                try:
                    archive_partition(step, using=using, report=lambda line: self.stdout.write(f"  {line}"))
                except PartitioningError as exc:
                    raise CommandError(
                        f"{exc} ({done} of {len(steps)} partitions done; nothing is dropped before its archive is"
                        " verified: rerun to resume)"
                    ) from exc
                done += 1
                bar.advance()
        self.stdout.write(self.style.SUCCESS(f"Archived {done} partition(s)."))
