"""Find partitioning problems; exits non-zero when there is any (for monitoring)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_scaleops.partitioning.commands import add_common_arguments, resolve
from django_scaleops.partitioning.health import find_problems


class Command(BaseCommand):
    help = (
        "Report gaps, overlaps, rows in default partitions, missing future partitions, indexes missing"
        " on a partition and unusual partition sizes. Exits with status 1 if anything is found."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_common_arguments(parser)
        parser.add_argument("--json", action="store_true", help="print the findings as JSON")
        parser.add_argument(
            "--size-factor", type=float, default=3.0, help="flag closed partitions this many times off the median"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        configs, using, now = resolve(options)
        findings = [
            f for c in configs for f in find_problems(c, using=using, now=now, size_factor=options["size_factor"])
        ]
        if options["json"]:
            self.stdout.write(json.dumps([f.as_dict() for f in findings], indent=2))
        else:
            for finding in findings:
                self.stdout.write(f"{finding.model}: {finding.kind}: {finding.message}")
            if not findings:
                self.stdout.write(self.style.SUCCESS(f"{len(configs)} partitioned model(s): no problems found."))
        if findings:
            raise CommandError(f"{len(findings)} partitioning problem(s) found", returncode=1)
