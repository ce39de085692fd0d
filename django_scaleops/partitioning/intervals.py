"""Interval arithmetic for partition bounds, in UTC."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from django_scaleops.partitioning.errors import PartitioningError

INTERVALS = ("day", "week", "month", "quarter", "year")

# What ``suffix`` produces, plus ConvertToPartitioned's first partition.
SUFFIX = re.compile(r"p\d{4}(_\d{2}(_\d{2})?|w\d{2}|q[1-4])?|legacy")


def is_partition_name(table: str, name: str) -> bool:
    """Whether ``name`` is a name this package gives partitions of ``table``."""
    return name.startswith(f"{table}_") and SUFFIX.fullmatch(name[len(table) + 1 :]) is not None


def _check(interval: str) -> None:
    if interval not in INTERVALS:
        raise PartitioningError(f"interval {interval!r} is not one of {', '.join(INTERVALS)}")


def to_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise PartitioningError(f"{moment!r} has no time zone; give an aware datetime (e.g. ...+00:00)")
    return moment.astimezone(UTC)


def floor(moment: datetime, interval: str) -> datetime:
    """The start (UTC midnight) of the interval that contains ``moment``."""
    _check(interval)
    day = to_utc(moment).date()
    if interval == "week":
        day -= timedelta(days=day.weekday())  # ISO weeks start on Monday
    elif interval == "month":
        day = day.replace(day=1)
    elif interval == "quarter":
        day = date(day.year, (day.month - 1) // 3 * 3 + 1, 1)
    elif interval == "year":
        day = date(day.year, 1, 1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def add(start: datetime, interval: str, count: int = 1) -> datetime:
    """``start`` (an interval start) moved by ``count`` intervals."""
    _check(interval)
    if interval == "day":
        return start + timedelta(days=count)
    if interval == "week":
        return start + timedelta(weeks=count)
    months = {"month": 1, "quarter": 3, "year": 12}[interval] * count
    index = start.year * 12 + start.month - 1 + months
    return start.replace(year=index // 12, month=index % 12 + 1, day=1)


def suffix(start: datetime, interval: str) -> str:
    """The partition name suffix of the interval starting at ``start``: p2026_01, p2026q1, p2026w05..."""
    _check(interval)
    if interval == "day":
        return start.strftime("p%Y_%m_%d")
    if interval == "week":
        year, week, _ = start.isocalendar()
        return f"p{year}w{week:02d}"
    if interval == "month":
        return start.strftime("p%Y_%m")
    if interval == "quarter":
        return f"p{start.year}q{(start.month - 1) // 3 + 1}"
    return f"p{start.year}"
