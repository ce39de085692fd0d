"""Mergeable log-bucket histograms (the DDSketch layout): relative error bounded, merge = add counts.

A value ``v > 0`` falls in bucket ``ceil(log(v) / log(gamma))``; the bucket's representative value is
within ``ACCURACY`` (1%) of every value in it, so any quantile read from the histogram is within 1%
of a sample value of that rank. Two histograms merge by adding their bucket counts, which is what
makes per-worker histograms summable in Redis with ``HINCRBY``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

ACCURACY = 0.01
GAMMA = (1 + ACCURACY) / (1 - ACCURACY)
INV_LOG_GAMMA = 1 / math.log(GAMMA)
# Values at or below this (microseconds) share one bucket; a query is never that fast.
MIN_VALUE = 1e-3
MIN_INDEX = math.ceil(math.log(MIN_VALUE) * INV_LOG_GAMMA)


def bucket_index(value: float) -> int:
    """The bucket of a positive value."""
    if value <= MIN_VALUE:
        return MIN_INDEX
    return math.ceil(math.log(value) * INV_LOG_GAMMA)


def bucket_value(index: int) -> float:
    """The representative value of a bucket: within ``ACCURACY`` of all values it holds."""
    return 2 * GAMMA**index / (GAMMA + 1)


def bucket_upper(index: int) -> float:
    """The largest value a bucket can hold."""
    return float(GAMMA**index)


class LogHistogram:
    """Counts per log bucket, plus count and sum. Values are in microseconds by convention."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0.0

    def add(self, value: float, times: int = 1) -> None:
        index = bucket_index(value)
        self.buckets[index] = self.buckets.get(index, 0) + times
        self.count += times
        self.total += value * times

    def extend(self, values: Iterable[float]) -> None:
        for value in values:
            self.add(value)

    def merge(self, other: LogHistogram) -> None:
        for index, count in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + count
        self.count += other.count
        self.total += other.total

    def quantile(self, q: float) -> float | None:
        """The value of rank ``q`` (0..1), or None when empty; rank as numpy's default, ``q * (n - 1)``."""
        if not 0 <= q <= 1:
            raise ValueError(f"quantile must be between 0 and 1, not {q!r}")
        if not self.count:
            return None
        rank = q * (self.count - 1)
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen > rank:
                return bucket_value(index)
        return bucket_value(max(self.buckets))

    def quantiles(self, qs: Iterable[float] = (0.5, 0.9, 0.95, 0.99)) -> dict[str, float | None]:
        return {f"p{round(q * 100):d}": self.quantile(q) for q in qs}

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def cumulative(self, bounds: Iterable[float]) -> list[tuple[float, int]]:
        """Counts of values <= each bound (to bucket resolution), for Prometheus ``le`` buckets."""
        ordered = sorted(self.buckets.items())
        result = []
        for bound in bounds:
            limit = bucket_index(bound)
            result.append((bound, sum(count for index, count in ordered if index <= limit)))
        return result

    def copy(self) -> LogHistogram:
        clone = LogHistogram()
        clone.buckets = dict(self.buckets)
        clone.count = self.count
        clone.total = self.total
        return clone

    def minus(self, older: LogHistogram) -> LogHistogram:
        """What was added since ``older`` (a previous copy of this histogram)."""
        delta = LogHistogram()
        for index, count in self.buckets.items():
            grown = count - older.buckets.get(index, 0)
            if grown:
                delta.buckets[index] = grown
        delta.count = self.count - older.count
        delta.total = self.total - older.total
        return delta

    @classmethod
    def from_buckets(cls, buckets: Mapping[int, int], total: float = 0.0) -> LogHistogram:
        histogram = cls()
        histogram.buckets = {index: count for index, count in buckets.items() if count}
        histogram.count = sum(histogram.buckets.values())
        histogram.total = total
        return histogram
