"""Read PgBouncer's admin console by column name.

The console speaks only the simple query protocol, so it is read with psycopg's
``ClientCursor`` and prepared statements off. Rows come back as dicts keyed by column name:
PgBouncer adds and renames columns between releases (1.18 to 1.25), so callers read the
columns they know with defaults and never rely on positions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import psycopg

from django_scaleops.conf import conf
from django_scaleops.pgbouncer.aliases import PgBouncerError, redact_url

Row = dict[str, Any]
SHOW_COMMANDS = frozenset({"VERSION", "POOLS", "STATS", "DATABASES", "CLIENTS", "SERVERS", "CONFIG", "LISTS"})


class AdminConsole:
    """One open connection to a PgBouncer admin console."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection

    def show(self, what: str) -> list[Row]:
        """Run ``SHOW <what>`` and return its rows as dicts (Decimals become ints or floats)."""
        what = what.upper()
        if what not in SHOW_COMMANDS:
            raise ValueError(f"unsupported admin command SHOW {what}")
        with self.connection.cursor() as cursor:
            cursor.execute(f"SHOW {what}")
            names = [column.name for column in cursor.description or ()]
            return [dict(zip(names, (_plain(value) for value in row), strict=True)) for row in cursor.fetchall()]

    def version(self) -> tuple[int, int, int]:
        """PgBouncer's version, e.g. ``(1, 18, 0)``."""
        rows = self.show("VERSION")
        text = str(next(iter(rows[0].values()))) if rows else ""
        return parse_version(text)

    def config(self) -> dict[str, str]:
        """``SHOW CONFIG`` as ``{key: value}``."""
        return {str(row["key"]): str(row.get("value") or "") for row in self.show("CONFIG")}


def parse_version(text: str) -> tuple[int, int, int]:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        raise PgBouncerError(f"cannot read a PgBouncer version from {text!r}")
    return int(match[1]), int(match[2]), int(match[3] or 0)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


@contextmanager
def admin_console(url: str, *, timeout: int | None = None) -> Iterator[AdminConsole]:
    """Open the admin console at ``url``; PgBouncerError (password masked) when unreachable."""
    try:
        connection = psycopg.connect(
            url,
            autocommit=True,
            prepare_threshold=None,
            cursor_factory=psycopg.ClientCursor,
            connect_timeout=timeout or conf.SCALEOPS_PGBOUNCER_CONNECT_TIMEOUT,
        )
    except psycopg.Error as exc:
        where = redact_url(url)
        raise PgBouncerError(f"cannot reach the PgBouncer admin console at {where}: {_first_line(exc)}") from None
    try:
        yield AdminConsole(connection)
    except psycopg.Error as exc:
        raise PgBouncerError(f"the PgBouncer admin console at {redact_url(url)} failed: {_first_line(exc)}") from None
    finally:
        connection.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
