from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_scaleops.dashboard.sampler import HistoryUnavailable, sample


class Command(BaseCommand):
    help = (
        "Record this minute's point of the operations dashboard's history in Redis (from cron, every"
        " minute: * * * * * python manage.py scaleops_sample). A second run in the same minute, or a"
        " worker that sampled already (SCALEOPS_DASHBOARD_SAMPLE), writes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="print the point (gauges only), write nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = sample(dry_run=options["dry_run"])
        except HistoryUnavailable as exc:
            raise CommandError(f"no history written: {exc}") from exc
        if not result.written and not options["dry_run"]:
            self.stdout.write(f"minute {result.minute}: nothing written ({result.reason})")
            return
        verb = "would write" if options["dry_run"] else "wrote"
        self.stdout.write(f"minute {result.minute}: {verb} {len(result.points)} point(s)")
        for name, (minute, value) in sorted(result.points.items()):
            self.stdout.write(f"  {name} = {value:.6g}" + (f" (minute {minute})" if minute != result.minute else ""))
        if options["dry_run"]:
            self.stdout.write("Dry run: counters become per-minute deltas only when written; nothing was written.")
        for capability, error in sorted(result.errors.items()):
            self.stderr.write(self.style.WARNING(f"  {capability}: not sampled ({error})"))
        if options["verbosity"] > 1:
            self.stdout.write(json.dumps(result.errors))
