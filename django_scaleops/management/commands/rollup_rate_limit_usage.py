"""``manage.py rollup_rate_limit_usage``: move per-minute usage counters from Redis into the database."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_scaleops.checks import redis_cache_problem
from django_scaleops.conf import conf
from django_scaleops.ratelimit.analytics import rollup_usage


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
        problem = redis_cache_problem(conf.SCALEOPS_THROTTLE_CACHE)
        if problem is not None:
            raise CommandError(
                f"The usage counters live in Redis, but {problem} (SCALEOPS_THROTTLE_CACHE): nothing to roll up."
            )
        while True:
            result = rollup_usage(dry_run=options["dry_run"])
            verb = "Would roll up" if options["dry_run"] else "Rolled up"
            self.stdout.write(
                f"{verb} {result.requests} requests in {result.minutes} key-minutes of {result.keys} keys."
            )
            if every is None:
                return
            time.sleep(every)
