"""The figures of the query monitor: one ``QueryStats`` per process, summed across the fleet."""

from __future__ import annotations

from typing import Any

from django_scaleops.monitoring.histogram import LogHistogram

OTHER = "other"  # the fingerprint under which statements past the bound are counted


class QueryStats:
    """Histograms per alias and per fingerprint, slow counts, and per-second counts for health.

    ``window`` maps a wall-clock second to ``[queries, slow queries]``; wall-clock so that
    seconds from different processes line up when summed.
    """

    __slots__ = (
        "alias_slow",
        "aliases",
        "fingerprint_slow",
        "fingerprint_text",
        "fingerprints",
        "n_plus_one",
        "window",
    )

    def __init__(self) -> None:
        self.aliases: dict[str, LogHistogram] = {}
        self.alias_slow: dict[str, int] = {}
        self.fingerprints: dict[str, LogHistogram] = {}
        self.fingerprint_slow: dict[str, int] = {}
        self.fingerprint_text: dict[str, str] = {OTHER: "(statements past SCALEOPS_MONITOR_MAX_FINGERPRINTS)"}
        self.window: dict[int, list[int]] = {}
        self.n_plus_one = 0

    def copy(self) -> QueryStats:
        clone = QueryStats()
        clone.aliases = {alias: hist.copy() for alias, hist in self.aliases.items()}
        clone.alias_slow = dict(self.alias_slow)
        clone.fingerprints = {fp: hist.copy() for fp, hist in self.fingerprints.items()}
        clone.fingerprint_slow = dict(self.fingerprint_slow)
        clone.fingerprint_text = dict(self.fingerprint_text)
        clone.window = {second: list(counts) for second, counts in self.window.items()}
        clone.n_plus_one = self.n_plus_one
        return clone

    def minus(self, older: QueryStats) -> QueryStats:
        """What was recorded since ``older``, a previous copy of these stats."""
        empty = LogHistogram()
        delta = QueryStats()
        delta.aliases = {a: h.minus(older.aliases.get(a, empty)) for a, h in self.aliases.items()}
        delta.alias_slow = {a: n - older.alias_slow.get(a, 0) for a, n in self.alias_slow.items()}
        delta.fingerprints = {f: h.minus(older.fingerprints.get(f, empty)) for f, h in self.fingerprints.items()}
        delta.fingerprint_slow = {f: n - older.fingerprint_slow.get(f, 0) for f, n in self.fingerprint_slow.items()}
        delta.fingerprint_text = {f: t for f, t in self.fingerprint_text.items() if f not in older.fingerprint_text}
        for second, (total, slow) in self.window.items():
            old_total, old_slow = older.window.get(second, (0, 0))
            if total != old_total or slow != old_slow:
                delta.window[second] = [total - old_total, slow - old_slow]
        delta.n_plus_one = self.n_plus_one - older.n_plus_one
        return delta

    def window_counts(self, now: float, seconds: int) -> tuple[int, int]:
        """``(queries, slow)`` over the last ``seconds`` wall-clock seconds up to ``now``."""
        first = int(now) - seconds + 1
        total = slow = 0
        for second, (queries, slow_queries) in self.window.items():
            if second >= first:
                total += queries
                slow += slow_queries
        return total, slow

    @property
    def total(self) -> int:
        return sum(hist.count for hist in self.aliases.values())

    def to_report(
        self, *, now: float, window: int, min_sample: int, degraded: float, unhealthy: float, top: int = 10
    ) -> dict[str, Any]:
        """The JSON document of ``/metrics/queries``. Durations are in milliseconds."""
        from django_scaleops.monitoring.health import classify

        queries, slow = self.window_counts(now, window)
        overall = LogHistogram()
        for hist in self.aliases.values():
            overall.merge(hist)
        ranked = sorted(
            self.fingerprints.items(),
            key=lambda item: (self.fingerprint_slow.get(item[0], 0), item[1].total),
            reverse=True,
        )
        return {
            "queries": overall.count,
            "slow": sum(self.alias_slow.values()),
            "n_plus_one_hints": self.n_plus_one,
            "duration_ms": _summary(overall),
            "aliases": {
                alias: {"queries": hist.count, "slow": self.alias_slow.get(alias, 0), "duration_ms": _summary(hist)}
                for alias, hist in sorted(self.aliases.items())
            },
            "health": {
                "status": classify(queries, slow, min_sample=min_sample, degraded=degraded, unhealthy=unhealthy),
                "window_seconds": window,
                "queries": queries,
                "slow": slow,
                "slow_share": slow / queries if queries else None,
                "min_sample": min_sample,
            },
            "top_slow_fingerprints": [
                {
                    "fingerprint": fp,
                    "statement": self.fingerprint_text.get(fp, ""),
                    "queries": hist.count,
                    "slow": self.fingerprint_slow.get(fp, 0),
                    "duration_ms": _summary(hist),
                }
                for fp, hist in ranked[:top]
            ],
        }


def _summary(hist: LogHistogram) -> dict[str, float | None]:
    """Percentiles and mean of a histogram of microseconds, in milliseconds."""
    summary = {name: _ms(value) for name, value in hist.quantiles().items()}
    summary["mean"] = _ms(hist.mean)
    summary["total"] = round(hist.total / 1000, 3)
    return summary


def _ms(micros: float | None) -> float | None:
    return None if micros is None else round(micros / 1000, 3)
