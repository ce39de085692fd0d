"""Which database aliases go through PgBouncer, read from ``SCALEOPS_PGBOUNCER_ALIASES``.

::

    SCALEOPS_PGBOUNCER_ALIASES = {
        "default": {                      # this alias connects to PgBouncer
            "pool_mode": "transaction",   # PgBouncer's pool_mode for it (the default)
            "admin_url": None,            # admin console; default: same host, port and user, dbname "pgbouncer"
            "direct": "direct",           # an alias straight to PostgreSQL, for session features
            "max_prepared_statements": 0, # PgBouncer's setting (1.21+); > 0 allows prepare_threshold
        },
    }
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from django.db import connections

from django_scaleops.conf import conf

POOL_MODES = ("session", "transaction", "statement")
OPTION_NAMES = ("pool_mode", "admin_url", "direct", "max_prepared_statements")
ADMIN_DATABASE = "pgbouncer"


class PgBouncerError(RuntimeError):
    """PgBouncer is misconfigured or its admin console could not be read."""


@dataclass(frozen=True)
class PooledAlias:
    """One alias that connects through PgBouncer, with its declared options."""

    alias: str
    pool_mode: str = "transaction"
    admin_url: str | None = field(default=None, repr=False)  # may hold a password
    direct: str | None = None
    max_prepared_statements: int = 0

    @property
    def transaction_pooled(self) -> bool:
        """Session state (SET, prepared statements, cursors) does not survive a transaction."""
        return self.pool_mode in ("transaction", "statement")

    def resolved_admin_url(self) -> str:
        """The admin console URL: declared, or built from the alias' host, port and user."""
        if self.admin_url:
            return self.admin_url
        params = connections[self.alias].settings_dict
        user = quote(str(params.get("USER") or ""), safe="")
        password = str(params.get("PASSWORD") or "")
        credentials = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
        host = str(params.get("HOST") or "localhost")
        if ":" in host:  # an IPv6 address
            host = f"[{host}]"
        port = f":{params['PORT']}" if params.get("PORT") else ""
        return f"postgresql://{credentials}{host}{port}/{ADMIN_DATABASE}"


def option_problems(alias: str, options: Any) -> list[str]:
    """What is wrong with one entry of ``SCALEOPS_PGBOUNCER_ALIASES`` (empty when fine)."""
    if alias not in connections.settings:
        return [f"alias {alias!r} is not in DATABASES"]
    if not isinstance(options, dict):
        return [f"the options of {alias!r} must be a dict, not {type(options).__name__}"]
    problems = [f"unknown option {key!r} for {alias!r}" for key in options if key not in OPTION_NAMES]
    mode = options.get("pool_mode", "transaction")
    if mode not in POOL_MODES:
        problems.append(f"pool_mode of {alias!r} must be one of {', '.join(POOL_MODES)}, not {mode!r}")
    direct = options.get("direct")
    if direct is not None:
        if direct not in connections.settings:
            problems.append(f"direct alias {direct!r} of {alias!r} is not in DATABASES")
        elif direct in conf.SCALEOPS_PGBOUNCER_ALIASES:
            problems.append(f"direct alias {direct!r} of {alias!r} goes through PgBouncer itself")
    mps = options.get("max_prepared_statements", 0)
    if isinstance(mps, bool) or not isinstance(mps, int) or mps < 0:
        problems.append(f"max_prepared_statements of {alias!r} must be an integer >= 0, not {mps!r}")
    url = options.get("admin_url")
    if url is not None and (not isinstance(url, str) or urlsplit(url).scheme not in ("postgres", "postgresql")):
        problems.append(f"admin_url of {alias!r} must be a postgresql:// URL")
    return problems


def pooled_aliases() -> list[PooledAlias]:
    """Every valid entry of ``SCALEOPS_PGBOUNCER_ALIASES`` (invalid ones are left to the checks)."""
    declared: Any = conf.SCALEOPS_PGBOUNCER_ALIASES
    if not isinstance(declared, dict):
        return []
    return [
        PooledAlias(alias=alias, **options)
        for alias, options in declared.items()
        if not option_problems(alias, options)
    ]


def default_pooled_alias() -> PooledAlias:
    """The first alias declared in ``SCALEOPS_PGBOUNCER_ALIASES``."""
    entries = pooled_aliases()
    if not entries:
        raise PgBouncerError("no alias is declared in SCALEOPS_PGBOUNCER_ALIASES")
    return entries[0]


def pooled_alias(alias: str) -> PooledAlias:
    """The declaration of ``alias``; PgBouncerError when it is not declared or invalid."""
    for entry in pooled_aliases():
        if entry.alias == alias:
            return entry
    raise PgBouncerError(
        f"database alias {alias!r} is not declared in SCALEOPS_PGBOUNCER_ALIASES (or its entry is invalid:"
        " run manage.py check)"
    )


def redact_url(url: str) -> str:
    """``url`` with any password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[1]}"))
