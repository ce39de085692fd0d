"""Options and helpers shared by the partition management commands."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import connections
from django.utils.dateparse import parse_datetime

from django_scaleops.checks import postgres_problem
from django_scaleops.partitioning.config import PartitionConfig, get_config, partitioned_models
from django_scaleops.partitioning.errors import PartitioningError


def add_common_arguments(parser: CommandParser, *, now: bool = True) -> None:
    parser.add_argument(
        "--model", action="append", default=[], metavar="APP.MODEL", help="only this model (repeatable)"
    )
    parser.add_argument("--database", default="default", help="database alias (default: default)")
    if now:
        parser.add_argument(
            "--now", default=None, help="pretend the clock says this ISO 8601 time (UTC if no offset is given)"
        )


def parse_moment(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = parse_datetime(value)
    except ValueError:
        moment = None
    if moment is None:
        raise CommandError(f"{option} {value!r} is not an ISO 8601 date-time, e.g. 2026-01-31T23:00:00+00:00")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def resolve(options: dict[str, Any]) -> tuple[list[PartitionConfig], str, datetime]:
    using = options["database"]
    if using not in connections:
        raise CommandError(f"--database {using!r} is not in DATABASES ({', '.join(connections)})")
    problem = postgres_problem(using)
    if problem is not None:
        raise CommandError(
            f"Table partitioning needs PostgreSQL 14+, but {problem}. "
            "Point that alias at PostgreSQL (django.db.backends.postgresql) to use the partition commands."
        )
    try:
        configs = partitioned_models()
        if options["model"]:
            chosen = {get_config(label).label for label in options["model"]}
            configs = [c for c in configs if c.label in chosen]  # keep the registry's order
    except PartitioningError as exc:
        raise CommandError(str(exc)) from exc
    now = parse_moment(options.get("now"), "--now") or datetime.now(UTC)
    return configs, using, now
