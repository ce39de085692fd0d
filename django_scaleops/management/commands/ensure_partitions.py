"""Create the current and the next ``premake`` partitions of every partitioned model."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_scaleops.conf import conf
from django_scaleops.partitioning.commands import add_common_arguments, parse_moment, resolve
from django_scaleops.partitioning.errors import PartitioningError
from django_scaleops.partitioning.plan import apply_plan, build_plan


class Command(BaseCommand):
    help = (
        "Create missing partitions (current interval + premake, UTC) with light locks; move rows out of"
        " the default partition. Plans, shows the plan, then applies it (--dry-run stops after showing)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_common_arguments(parser)
        parser.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
        parser.add_argument("--since", default=None, help="also create partitions back to this date (backfill)")
        parser.add_argument(
            "--rescue-default",
            action="store_true",
            help="also create the partitions that rows waiting in the default partition belong to, and move them",
        )
        parser.add_argument("--batch-size", type=int, default=None, help="rows moved per committed batch")

    def handle(self, *args: Any, **options: Any) -> None:
        configs, using, now = resolve(options)
        batch_size = options["batch_size"] or conf.SCALEOPS_PARTITION_BATCH_SIZE
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        since = parse_moment(options["since"], "--since")
        try:
            plan = build_plan(configs, using=using, now=now, since=since, rescue=options["rescue_default"])
        except PartitioningError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Partition plan for {len(configs)} model(s) on {using!r}, now = {now.isoformat()}:")
        for item in plan.held:
            self.stdout.write(self.style.WARNING(f"  {item.describe()}"))
        if not plan:
            done = "the other partitions exist" if plan.held else "every partition exists"
            self.stdout.write(f"  nothing to {'create' if plan.held else 'do'}: {done}")
            return
        for item in plan.creations:
            self.stdout.write(f"  {item.describe()}")
        if options["dry_run"]:
            self.stdout.write("Dry run: nothing was changed.")
            return
        try:
            created = apply_plan(
                plan, using=using, batch_size=batch_size, report=lambda line: self.stdout.write(f"  {line}")
            )
        except PartitioningError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Created {created} partition(s)."))
