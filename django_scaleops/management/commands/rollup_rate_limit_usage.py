"""``manage.py rollup_rate_limit_usage``: move per-minute usage counters from Redis into the database.

One run at a time (a lock in Redis): a run that finds another at work prints "Skipped" and exits 0.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_scaleops.checks import redis_cache_problem
from django_scaleops.conf import conf
from django_scaleops.ratelimit.analytics import RollupLockLost, rollup_usage


class Command(BaseCommand):
    help = "Roll completed minutes of API-key usage up from Redis into ApiKeyUsage and set last_used_at."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Report what would be rolled up; change nothing.")
        parser.add_argument(
            "--every", type=float, metavar="SECONDS", help="Keep running, rolling up every SECONDS (a periodic job)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        every = options["every"]
        if every is not None and every < 1:
            raise CommandError("--every must be at least 1 second.")
        problem = redis_cache_problem(conf.SCALEOPS_THROTTLE_CACHE_ALIAS)
        if problem is not None:
            raise CommandError(
                f"The usage counters live in Redis, but {problem} (SCALEOPS_THROTTLE_CACHE_ALIAS): nothing to roll up."
            )
        while True:
            try:
                result = rollup_usage(dry_run=options["dry_run"])
            except RollupLockLost as exc:
                if every is None:
                    raise CommandError(str(exc)) from exc
                self.stderr.write(f"{exc}; trying again in {every} s.")
            else:
                if result.skipped:
                    # Another run (cron overlap, a second host) is at it; its counts are safe with it.
                    self.stdout.write("Skipped: another rollup_rate_limit_usage run holds the lock.")
                else:
                    verb = "Would roll up" if options["dry_run"] else "Rolled up"
                    self.stdout.write(
                        f"{verb} {result.requests} requests in {result.minutes} key-minutes of {result.keys} keys."
                    )
            if every is None:
                return
            time.sleep(every)
