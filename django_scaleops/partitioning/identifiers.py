"""Identifier checks and quoting for the DDL this package writes.

Table and partition names come from models and settings, never from requests, but a hostile or
broken name must still fail with a clear error instead of reaching SQL: names are checked against
a conservative pattern *and* always quoted.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from django_scaleops.partitioning.errors import PartitioningError

# PostgreSQL truncates identifiers at 63 bytes; a truncated partition name could collide.
MAX_IDENTIFIER = 63
_SAFE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_identifier(name: str, what: str = "identifier") -> str:
    """Return ``name`` if it is a plain identifier PostgreSQL keeps as is; raise otherwise."""
    if not _SAFE.match(name):
        raise PartitioningError(
            f"{what} {name!r} is not allowed: use letters, digits and underscores only, starting with a letter"
        )
    if len(name.encode()) > MAX_IDENTIFIER:
        raise PartitioningError(
            f"{what} {name!r} is {len(name.encode())} bytes; PostgreSQL identifiers are at most {MAX_IDENTIFIER}"
        )
    return name


def qn(name: str) -> str:
    """Quote a checked identifier (double quotes doubled, as PostgreSQL expects)."""
    check_identifier(name)
    return '"' + name.replace('"', '""') + '"'


def ts(value: datetime) -> str:
    """A timestamptz literal for a partition bound (bounds are ours, always aware datetimes)."""
    if value.tzinfo is None:
        raise PartitioningError(f"partition bound {value!r} has no time zone")
    return "'" + value.isoformat() + "'::timestamptz"


def column_of(model: Any, field_name: str) -> str:
    """The checked database column of ``model``'s field ``field_name``."""
    column = getattr(model._meta.get_field(field_name), "column", None)
    if not isinstance(column, str):
        raise PartitioningError(f"{model._meta.label}.{field_name} has no database column")
    return check_identifier(column, f"{model._meta.label}.{field_name} column")


def pk_column(model: Any) -> str:
    pk = model._meta.pk
    if pk is None:
        raise PartitioningError(f"{model._meta.label} has no primary key")
    return column_of(model, pk.name)
