"""``manage.py pgbouncer_status``: live pools, health and leaks; exit code 2 when unhealthy."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_scaleops.pgbouncer.aliases import PgBouncerError, pooled_alias, pooled_aliases
from django_scaleops.pgbouncer.health import DEGRADED, UNHEALTHY, PoolHealth, validate_pool_health

EXIT_DEGRADED = 1
EXIT_UNHEALTHY = 2


class Command(BaseCommand):
    help = (
        "Show PgBouncer's pools, health, recommendations and connection leaks for the aliases declared in"
        " SCALEOPS_PGBOUNCER_ALIASES. Exits 2 when unhealthy (and 1 when degraded with --fail-on-degraded)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--database", action="append", dest="aliases", metavar="ALIAS")
        parser.add_argument("--json", action="store_true", help="One JSON document on stdout.")
        parser.add_argument(
            "--sample", type=float, default=0.0, metavar="SECONDS", help="Measure server churn over this long."
        )
        parser.add_argument("--fail-on-degraded", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            entries = [pooled_alias(a) for a in options["aliases"]] if options["aliases"] else pooled_aliases()
        except PgBouncerError as exc:
            raise CommandError(str(exc)) from None
        if not entries:
            raise CommandError("no alias is declared in SCALEOPS_PGBOUNCER_ALIASES; see docs/pgbouncer.md")
        results = [validate_pool_health(entry.alias, sample_seconds=options["sample"]) for entry in entries]
        if options["json"]:
            self.stdout.write(json.dumps({"aliases": [result.as_dict() for result in results]}, indent=2))
        else:
            for result in results:
                self._print(result)
        statuses = {result.status for result in results}
        if UNHEALTHY in statuses:
            raise CommandError("PgBouncer is unhealthy", returncode=EXIT_UNHEALTHY)
        if DEGRADED in statuses and options["fail_on_degraded"]:
            raise CommandError("PgBouncer is degraded", returncode=EXIT_DEGRADED)

    def _print(self, result: PoolHealth) -> None:
        style = {"ok": self.style.SUCCESS, "degraded": self.style.WARNING}.get(result.status, self.style.ERROR)
        metrics = result.metrics
        version = f" (PgBouncer {'.'.join(map(str, metrics.version))})" if metrics else ""
        self.stdout.write(style(f"{result.alias}{version}: {result.status.upper()}"))
        if metrics:
            for pool in metrics.pools:
                self.stdout.write(
                    f"  pool {pool.database}/{pool.user} [{pool.pool_mode}] size {pool.pool_size}:"
                    f" clients {pool.cl_active} active, {pool.cl_waiting} waiting;"
                    f" servers {pool.sv_active} active, {pool.sv_idle} idle, {pool.sv_used} used;"
                    f" maxwait {pool.maxwait_ms:.0f} ms; busy {pool.utilisation:.0%}"
                )
            for database, stats in sorted(metrics.stats.items()):
                self.stdout.write(
                    f"  stats {database}: {stats.get('avg_xact_count', 0):.0f} xact/s,"
                    f" avg xact {stats.get('avg_xact_time', 0) / 1000:.2f} ms,"
                    # avg_wait_time is microseconds of waiting per second, summed over clients.
                    f" clients waited {stats.get('avg_wait_time', 0) / 1000:.1f} ms/s"
                )
        if result.server_sessions_per_minute is not None:
            self.stdout.write(f"  new server sessions: {result.server_sessions_per_minute:.1f}/min")
        for finding in result.findings:
            self.stdout.write(f"  {finding.level}: {finding.pool}: {finding.problem}")
            self.stdout.write(f"    -> {finding.recommendation}")
        for leak in result.leaks:
            app = f" app {leak.application_name!r}" if leak.application_name else ""
            self.stdout.write(
                f"  leak ({leak.kind}): {leak.database}/{leak.user} client {leak.client_addr}:{leak.client_port}{app}"
                f" held {leak.held_seconds:.0f}s (server pid {leak.server_pid})"
            )
