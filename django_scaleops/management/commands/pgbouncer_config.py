"""``manage.py pgbouncer_config``: write pgbouncer.ini and userlist.txt from DATABASES."""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connections

from django_scaleops.pgbouncer.aliases import POOL_MODES
from django_scaleops.pgbouncer.config import (
    AUTH_TYPES,
    ConfigError,
    GeneratedConfig,
    ServerEntry,
    build_config,
    server_aliases,
    server_entries,
    server_secrets,
)
from django_scaleops.pgbouncer.sizing import DEFAULT_HEADROOM, PoolRecommendation, calculate_pool_size


class Command(BaseCommand):
    help = (
        "Write pgbouncer.ini and userlist.txt for the PostgreSQL servers in DATABASES (replicas included):"
        " transaction pooling by default, pools sized by calculate_pool_size(). Secrets are never printed."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--output-dir", type=Path, help="Folder for pgbouncer.ini and userlist.txt.")
        parser.add_argument("--dry-run", action="store_true", help="Print the ini (not the secrets); write nothing.")
        parser.add_argument(
            "--database", action="append", dest="aliases", metavar="ALIAS", help="Only these aliases (repeatable)."
        )
        parser.add_argument("--auth-type", choices=AUTH_TYPES, default="scram-sha-256")
        parser.add_argument("--pool-mode", choices=POOL_MODES, default="transaction")
        parser.add_argument("--listen-addr", default="127.0.0.1")
        parser.add_argument("--listen-port", type=int, default=6432)
        parser.add_argument("--cores", type=int, help="CPU cores of the database server (default: this machine's).")
        parser.add_argument("--spindles", type=int, default=1, help="Effective spindles (1 for SSD).")
        parser.add_argument("--workers", type=int, default=1, help="Application processes, all hosts together.")
        parser.add_argument("--threads", type=int, default=1, help="Threads per application process.")
        parser.add_argument(
            "--max-connections", type=int, help="The servers' max_connections (default: asked from each server)."
        )
        parser.add_argument(
            "--rate",
            type=float,
            help="Requests a second through each pool; with --db-time-ms, pools are no larger than Little's law"
            " needs (docs/scaling.md).",
        )
        parser.add_argument(
            "--db-time-ms", type=float, help="Time in the database per request, in ms (the query monitor's figure)."
        )
        parser.add_argument(
            "--headroom",
            type=float,
            default=DEFAULT_HEADROOM,
            help=f"Multiple of the average busy connections a pool gets (default {DEFAULT_HEADROOM:g}).",
        )
        parser.add_argument("--admin-user", action="append", default=[], help="Add to admin_users (repeatable).")
        parser.add_argument(
            "--secrets-from",
            metavar="ALIAS",
            help="Copy the roles' stored verifiers from pg_authid through ALIAS (a superuser connection), so"
            " PgBouncer can also log in to servers that ask for SCRAM.",
        )
        parser.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help="Add or override a [pgbouncer] setting."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["dry_run"] and not options["output_dir"]:
            raise CommandError("give --output-dir (or --dry-run to only print the configuration)")
        extra = self._extra_settings(options["set"])
        try:
            entries = server_entries(server_aliases(options["aliases"]))
            recommendation = self._size(entries, options)
            stored = self._stored_secrets(options["secrets_from"], entries) if options["secrets_from"] else {}
            out_dir: Path | None = options["output_dir"]
            auth_file = str((out_dir / "userlist.txt").resolve()) if out_dir else "userlist.txt"
            generated = build_config(
                entries,
                recommendation,
                auth_type=options["auth_type"],
                pool_mode=options["pool_mode"],
                listen_addr=options["listen_addr"],
                listen_port=options["listen_port"],
                auth_file=auth_file,
                admin_users=options["admin_user"],
                stored_secrets=stored,
                extra=extra,
            )
        except (ConfigError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        if options["dry_run"] or out_dir is None:
            self.stdout.write(generated.ini)
            self.stdout.write(
                f";; userlist.txt: {len(generated.users)} users ({', '.join(generated.users)}), secrets not shown"
            )
        else:
            ini_path, userlist_path = generated.write(out_dir)
            self.stdout.write(self.style.SUCCESS(f"Wrote {ini_path} and {userlist_path} (mode 0600)."))
            self.stdout.write(f"userlist.txt: {len(generated.users)} users, {options['auth_type']} verifiers.")
        self._explain(generated, recommendation, options)

    def _extra_settings(self, pairs: list[str]) -> dict[str, str]:
        extra = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise CommandError(f"--set expects KEY=VALUE, not {pair!r}")
            extra[key.strip()] = value.strip()
        return extra

    def _size(self, entries: list[ServerEntry], options: dict[str, Any]) -> PoolRecommendation:
        per_server: dict[tuple[str, str], int] = {}
        for entry in entries:
            server = (entry.host, entry.port)
            per_server[server] = per_server.get(server, 0) + 1
        if (options["rate"] is None) != (options["db_time_ms"] is None):
            raise CommandError("give --rate and --db-time-ms together (Little's law needs both)")
        max_connections = options["max_connections"]
        if max_connections is None:
            max_connections = min(self._max_connections(entry.alias) for entry in entries)
        return calculate_pool_size(
            cores=options["cores"],
            spindles=options["spindles"],
            workers=options["workers"],
            threads=options["threads"],
            max_connections=max_connections,
            pools=max(per_server.values()),
            rate=options["rate"],
            db_time_ms=options["db_time_ms"],
            headroom=options["headroom"],
        )

    def _max_connections(self, alias: str) -> int:
        try:
            with connections[alias].cursor() as cursor:
                cursor.execute("SHOW max_connections")
                row = cursor.fetchone()
        except DatabaseError as exc:
            raise CommandError(
                f"cannot ask alias {alias!r} for max_connections ({type(exc).__name__}); pass --max-connections"
            ) from None
        return int(row[0]) if row else 100

    def _stored_secrets(self, alias: str, entries: list[ServerEntry]) -> dict[str, str]:
        if alias not in connections.settings:
            raise CommandError(f"--secrets-from: unknown database alias {alias!r}")
        try:
            return server_secrets(alias, {entry.user for entry in entries})
        except DatabaseError as exc:
            raise CommandError(
                f"cannot read pg_authid through {alias!r} ({type(exc).__name__}): it needs a superuser."
                " Drop --secrets-from to compute verifiers from each alias' PASSWORD."
            ) from None

    def _explain(self, generated: GeneratedConfig, recommendation: PoolRecommendation, options: dict[str, Any]) -> None:
        self.stdout.write("")
        self.stdout.write(
            f"Pools: default_pool_size={recommendation.default_pool_size}"
            f" (limited by {recommendation.limited_by}), reserve_pool_size={recommendation.reserve_pool_size},"
            f" max_client_conn={recommendation.max_client_conn}."
        )
        self.stdout.write("Point each alias at PgBouncer and declare it:")
        for entry in generated.entries:
            self.stdout.write(
                f"  {entry.alias!r}: HOST={options['listen_addr']!r}, PORT='{options['listen_port']}',"
                f" NAME={entry.name!r}, DISABLE_SERVER_SIDE_CURSORS=True"
            )
        mode = options["pool_mode"]
        declared = ", ".join(f"{entry.alias!r}: {{'pool_mode': {mode!r}}}" for entry in generated.entries)
        self.stdout.write(f"  SCALEOPS_PGBOUNCER_ALIASES = {{{declared}}}")
        self.stdout.write("Keep an alias straight to PostgreSQL for migrations and session features.")
