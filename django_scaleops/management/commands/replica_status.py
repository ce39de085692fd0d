"""``manage.py replica_status``: check every replica now and show its state and lag.

Exits 1 when any replica is not healthy (or reads have fallen back to the primary), so it can
serve as a probe in scripts and monitoring.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_scaleops.replicas.routing import replica_status


class Command(BaseCommand):
    help = "Check each read replica now and show its state, replay lag and counters."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the status as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        status = replica_status(refresh=True)
        if not status["configured"]:
            raise CommandError(
                "PrimaryReplicaRouter is not in DATABASE_ROUTERS: there are no replicas to report on.", returncode=2
            )
        if options["json"]:
            self.stdout.write(json.dumps(status, indent=2, sort_keys=True))
        else:
            self.stdout.write(f"primary: {status['primary']}")
            header = f"{'replica':<16} {'state':<11} {'lag s':>8} {'lag bytes':>12} {'replay lsn':>14}  last error"
            self.stdout.write(header)
            for alias, replica in status["replicas"].items():
                lag_s = "-" if replica["lag_seconds"] is None else f"{replica['lag_seconds']:.2f}"
                lag_b = "-" if replica["lag_bytes"] is None else f"{replica['lag_bytes']:,}"
                state = replica["state"] + (" (mirror)" if replica["mirror"] else "")
                style = self.style.SUCCESS if replica["state"] == "healthy" else self.style.ERROR
                self.stdout.write(
                    f"{alias:<16} {style(f'{state:<11}')} {lag_s:>8} {lag_b:>12} {replica['replay_lsn'] or '-':>14}"
                    f"  {replica['last_error']}"
                )
        if status["degraded"]:
            unhealthy = [a for a, r in status["replicas"].items() if r["state"] != "healthy"]
            raise CommandError(f"degraded: not healthy: {', '.join(unhealthy)}", returncode=1)
