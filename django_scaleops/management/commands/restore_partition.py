"""Bring an archived partition back from the archive storage."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_scaleops.partitioning.archive import list_archives, restore_partition
from django_scaleops.partitioning.commands import resolve
from django_scaleops.partitioning.errors import PartitioningError


class Command(BaseCommand):
    help = "Restore an archived partition (verifying its checksum) and attach it again."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", metavar="APP.MODEL")
        parser.add_argument("partition", nargs="?", help="partition name, e.g. chat_message_p2024_01")
        parser.add_argument("--database", default="default")
        parser.add_argument("--list", action="store_true", help="list the archived partitions of the model")
        parser.add_argument("--no-attach", action="store_true", help="restore as a standalone table, for inspection")

    def handle(self, *args: Any, **options: Any) -> None:
        configs, using, _ = resolve({**options, "model": [options["model"]]})
        config = configs[0]
        if options["list"] or not options["partition"]:
            names = list_archives(using, config)
            self.stdout.write(f"Archived partitions of {config.label}: {', '.join(names) or 'none'}")
            return
        try:
            restore_partition(
                config,
                options["partition"],
                using=using,
                attach=not options["no_attach"],
                report=lambda line: self.stdout.write(f"  {line}"),
            )
        except PartitioningError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Restored {options['partition']}."))
