"""System checks for aliases behind PgBouncer (IDs scaleops.E5xx / W5xx).

Static checks read settings only. The live checks (admin console reachable, version and
``max_prepared_statements`` able to carry prepared statements, declared pool mode) run only
when ``manage.py check --database ALIAS`` names the alias.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import connections

from django_scaleops.conf import conf
from django_scaleops.pgbouncer.aliases import PgBouncerError, PooledAlias, option_problems, pooled_aliases, redact_url
from django_scaleops.pgbouncer.console import admin_console

DOCS = "See docs/pgbouncer.md."
# Protocol-level named prepared statements arrived in PgBouncer 1.21 (max_prepared_statements).
PREPARED_STATEMENTS_SINCE = (1, 21, 0)


def register_checks() -> None:
    register(check_pgbouncer_settings)
    register(Tags.database)(check_pgbouncer_live)


def check_pgbouncer_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    declared: Any = conf.SCALEOPS_PGBOUNCER_ALIASES
    if isinstance(declared, dict):
        for alias, options in declared.items():
            for problem in option_problems(alias, options):
                messages.append(
                    Error(
                        f"SCALEOPS_PGBOUNCER_ALIASES: {problem}.",
                        hint=f"Options are {{'pool_mode', 'admin_url', 'direct', 'max_prepared_statements'}}. {DOCS}",
                        id="scaleops.E501",
                    )
                )
    for alias, params in connections.settings.items():
        messages += _native_pool_messages(alias, params)
    for entry in pooled_aliases():
        if entry.transaction_pooled:
            messages += _transaction_mode_messages(entry, connections.settings[entry.alias])
    return messages


def _native_pool_messages(alias: str, params: dict[str, Any]) -> list[CheckMessage]:
    options = params.get("OPTIONS") or {}
    if "pool" not in options:
        return []
    pool = options["pool"]
    if pool not in (None, False) and not pool:
        return [
            Error(
                f"DATABASES[{alias!r}]['OPTIONS']['pool'] is {pool!r}: Django treats an empty value as"
                " 'no pool' and opens a new connection per request without saying so.",
                hint="Use 'pool': True for the defaults, or a dict such as {'min_size': 2, 'max_size': 8}.",
                id="scaleops.E505",
            )
        ]
    if pool and params.get("CONN_MAX_AGE", 0) != 0:
        return [
            Error(
                f"DATABASES[{alias!r}] combines CONN_MAX_AGE={params.get('CONN_MAX_AGE')!r} with the native"
                " pool (OPTIONS['pool']); Django refuses this at the first query.",
                hint="Set CONN_MAX_AGE to 0: the pool keeps connections open.",
                id="scaleops.E504",
            )
        ]
    return []


def _transaction_mode_messages(entry: PooledAlias, params: dict[str, Any]) -> list[CheckMessage]:
    alias, mode = entry.alias, entry.pool_mode
    options = params.get("OPTIONS") or {}
    messages: list[CheckMessage] = []
    if not params.get("DISABLE_SERVER_SIDE_CURSORS"):
        messages.append(
            Error(
                f"DATABASES[{alias!r}] goes through PgBouncer in {mode} mode but keeps server-side cursors:"
                " .iterator() declares a cursor in one transaction and fetches in another, on another"
                " server connection ('cursor ... does not exist').",
                hint=f"Add 'DISABLE_SERVER_SIDE_CURSORS': True to DATABASES[{alias!r}].",
                id="scaleops.E502",
            )
        )
    threshold = options.get("prepare_threshold")
    if threshold is not None and not entry.max_prepared_statements:
        messages.append(
            Error(
                f"DATABASES[{alias!r}] enables psycopg's prepared statements (prepare_threshold={threshold!r})"
                f" behind PgBouncer in {mode} mode without max_prepared_statements: statements land on other"
                " server connections ('prepared statement ... already exists / does not exist').",
                hint=(
                    "Remove OPTIONS['prepare_threshold'] (Django then disables them), or run PgBouncer 1.21+"
                    " with max_prepared_statements > 0 and declare it in SCALEOPS_PGBOUNCER_ALIASES."
                ),
                id="scaleops.E503",
            )
        )
    if options.get("assume_role"):
        messages.append(
            Error(
                f"DATABASES[{alias!r}] sets OPTIONS['assume_role']: Django runs SET ROLE once per connection,"
                f" and in {mode} mode later transactions run on server connections without that role.",
                hint="Log in as the role itself (USER), or route this alias around PgBouncer.",
                id="scaleops.E506",
            )
        )
    if options.get("options"):
        messages.append(
            Warning(
                f"DATABASES[{alias!r}] passes startup options ({options['options']!r}) through PgBouncer,"
                " which refuses them (or drops them when listed in ignore_startup_parameters).",
                hint="Set them per role or database instead: ALTER ROLE ... SET statement_timeout = '5s'.",
                id="scaleops.W501",
            )
        )
    return messages


def check_pgbouncer_live(
    app_configs: Any = None, databases: Iterable[str] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Ask each named alias' PgBouncer whether it can carry what the alias does."""
    if not databases:
        return []
    wanted = set(databases)
    messages: list[CheckMessage] = []
    for entry in pooled_aliases():
        if entry.alias not in wanted:
            continue
        url = entry.resolved_admin_url()
        try:
            with admin_console(url) as console:
                version = console.version()
                config = console.config()
                database_modes = {str(row.get("name")): row.get("pool_mode") for row in console.show("DATABASES")}
        except PgBouncerError as exc:
            messages.append(
                Error(
                    str(exc),
                    hint=f"Start PgBouncer, or set admin_url for {entry.alias!r} in SCALEOPS_PGBOUNCER_ALIASES"
                    " (the user must be in stats_users or admin_users).",
                    id="scaleops.E507",
                )
            )
            continue
        messages += _live_messages(entry, version, config, database_modes, url)
    return messages


def _live_messages(
    entry: PooledAlias,
    version: tuple[int, int, int],
    config: dict[str, str],
    database_modes: dict[str, Any],
    url: str,
) -> list[CheckMessage]:
    params = connections.settings[entry.alias]
    messages: list[CheckMessage] = []
    shown = ".".join(map(str, version))
    threshold = (params.get("OPTIONS") or {}).get("prepare_threshold")
    max_prepared = int(config.get("max_prepared_statements") or 0)
    if threshold is not None and (version < PREPARED_STATEMENTS_SINCE or max_prepared == 0):
        messages.append(
            Error(
                f"DATABASES[{entry.alias!r}] enables prepared statements, but PgBouncer {shown} at"
                f" {redact_url(url)} cannot carry them (max_prepared_statements={max_prepared}).",
                hint="Remove OPTIONS['prepare_threshold'], or upgrade to PgBouncer 1.21+ and set"
                " max_prepared_statements (e.g. 200).",
                id="scaleops.E508",
            )
        )
    mode = database_modes.get(str(params.get("NAME"))) or config.get("pool_mode", "")
    if mode and mode != entry.pool_mode:
        messages.append(
            Error(
                f"DATABASES[{entry.alias!r}] is declared as PgBouncer {entry.pool_mode} mode, but PgBouncer"
                f" pools {params.get('NAME')!r} in {mode} mode.",
                hint="Fix pool_mode in SCALEOPS_PGBOUNCER_ALIASES (the checks depend on it) or in pgbouncer.ini.",
                id="scaleops.E509",
            )
        )
    return messages
