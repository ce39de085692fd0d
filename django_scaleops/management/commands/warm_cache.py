"""``manage.py warm_cache``: run the registered cache warmers, once or every N seconds."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_scaleops.cache.warmers import discover, run_warmer


class Command(BaseCommand):
    help = "Run the cache warmers registered with @warmer (all, or those named)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("names", nargs="*", help="warmers to run (default: all)")
        parser.add_argument("--list", action="store_true", help="list the warmers and exit")
        parser.add_argument("--dry-run", action="store_true", help="say what would run, run nothing")
        parser.add_argument(
            "--fill-only", action="store_true", help="only fill missing entries instead of refreshing them"
        )
        parser.add_argument("--every", type=float, default=0, help="repeat every N seconds (periodic refresh)")
        parser.add_argument("--times", type=int, default=0, help="with --every: stop after N runs (0 = forever)")

    def handle(self, *args: Any, **options: Any) -> None:
        warmers = discover()
        if options["list"]:
            for name, item in warmers.items():
                self.stdout.write(f"{name}  {item.doc}".rstrip())
            if not warmers:
                self.stdout.write("No warmers registered (define them in a cache_warmers module).")
            return
        unknown = [n for n in options["names"] if n not in warmers]
        if unknown:
            raise CommandError(f"Unknown warmers {unknown}; known: {sorted(warmers)}")
        chosen = [warmers[n] for n in options["names"]] if options["names"] else list(warmers.values())
        if options["every"] < 0 or options["times"] < 0:
            raise CommandError("--every and --times must not be negative")
        if options["dry_run"]:
            for item in chosen:
                self.stdout.write(f"would run {item.name}")
            return
        runs = 0
        while True:
            failed = 0
            for item in chosen:
                try:
                    seconds = run_warmer(item, refresh=not options["fill_only"])
                except Exception as exc:  # one broken warmer must not stop the others
                    failed += 1
                    self.stderr.write(f"{item.name} failed: {type(exc).__name__}: {exc}")
                else:
                    self.stdout.write(f"{item.name} warmed in {seconds * 1000:.1f} ms")
            runs += 1
            if not options["every"] or (options["times"] and runs >= options["times"]):
                break
            time.sleep(options["every"])
        if failed:
            raise CommandError(f"{failed} warmer(s) failed")
