"""Show each partition: range, rows (estimated, or --exact), size and indexes."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from django_scaleops.partitioning.commands import add_common_arguments, resolve
from django_scaleops.partitioning.health import partition_details


class Command(BaseCommand):
    help = "Show the partitions of each partitioned model: range, rows, size, indexes."

    def add_arguments(self, parser: CommandParser) -> None:
        add_common_arguments(parser, now=False)
        parser.add_argument("--exact", action="store_true", help="count rows (a scan) instead of estimating")
        parser.add_argument("--json", action="store_true", help="print JSON, for scripts and monitoring")

    def handle(self, *args: Any, **options: Any) -> None:
        configs, using, _ = resolve(options)
        details = [row for c in configs for row in partition_details(c, using=using, exact=options["exact"])]
        if options["json"]:
            self.stdout.write(json.dumps(details, indent=2))
            return
        rows_key = "rows" if options["exact"] else "estimated_rows"
        for config in configs:
            self.stdout.write(self.style.MIGRATE_HEADING(f"{config.label} ({config.table}, by {config.interval})"))
            for row in (r for r in details if r["model"] == config.label):
                span = "DEFAULT" if row["default"] else f"[{row['from'] or '-inf'}, {row['to'] or '+inf'})"
                rows = "?" if row[rows_key] is None else f"{row[rows_key]:,}"
                self.stdout.write(
                    f"  {row['partition']:<40} {span:<54} {rows:>12} rows"
                    f" {row['bytes'] / 1024:>10,.0f} KiB  {len(row['indexes'])} indexes: {', '.join(row['indexes'])}"
                )
