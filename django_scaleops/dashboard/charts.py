"""Charts as inline SVG, drawn on the server: no JavaScript, no CDN, no build step.

Axes and labels use ``currentColor`` and the admin's CSS variables, so a chart follows the admin's
light and dark themes; series colours are mid-tone, readable on both backgrounds. Hooks for a
browser test: each chart is ``<svg class="scaleops-chart">``, each series one ``<polyline>`` (line
chart) or one ``<path>`` (bar chart) with ``data-series`` and ``data-points`` (its point count).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#ff9da7")
WIDTH, HEIGHT = 560, 180
LEFT, RIGHT, TOP, BOTTOM = 58, 10, 10, 24


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[int, float]]  # (epoch minute, value)


def _number(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value * 100:.0f}%"
    if unit == "bytes":
        for size, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if abs(value) >= size:
                return f"{value / size:.1f} {suffix}"
        return f"{value:.0f} B"
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.3g}"


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exponent: float = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exponent:
            return step * exponent
    return 10 * exponent


def _legend(names: Sequence[str]) -> str:
    items = []
    for index, name in enumerate(names):
        colour = PALETTE[index % len(PALETTE)]
        items.append(
            f'<span class="scaleops-legend-item"><span class="scaleops-swatch" style="background:{colour}"></span>'
            f"{escape(name)}</span>"
        )
    return f'<div class="scaleops-legend">{"".join(items)}</div>'


def line_chart(
    title: str, series: Sequence[Series], *, start: int, end: int, unit: str, y_max: float | None = None
) -> SafeString:
    """A time chart from epoch minute ``start`` to ``end``; the y axis is labelled in ``unit``."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = max(end - start, 1)
    top = y_max if y_max is not None else _nice_max(max((v for s in series for _, v in s.points), default=0.0))
    parts = [
        f'<svg class="scaleops-chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img"'
        f' xmlns="http://www.w3.org/2000/svg" aria-label="{escape(title)}" data-unit="{escape(unit)}">',
        f"<title>{escape(title)} ({escape(unit)})</title>",
    ]
    # Horizontal grid with the y labels.
    for step in range(5):
        value = top * step / 4
        y = TOP + plot_h - plot_h * step / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"'
            ' stroke="var(--hairline-color, #ccc)" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10" fill="currentColor">'
            f"{escape(_number(value, unit))}</text>"
        )
    # Time axis: about six ticks on round minutes.
    tick = next(t for t in (5, 10, 15, 30, 60, 120, 180, 240, 360) if span / t <= 7)
    first = -(-start // tick) * tick
    for minute in range(first, end + 1, tick):
        x = LEFT + plot_w * (minute - start) / span
        label = datetime.fromtimestamp(minute * 60, tz=UTC).strftime("%H:%M")
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP + plot_h}" y2="{TOP + plot_h + 4}" stroke="currentColor"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="middle" font-size="10" fill="currentColor">{label}</text>'
        )
    parts.append(
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}" stroke="var(--border-color, #999)"/>'
        f'<text x="4" y="{TOP + 8}" font-size="10" fill="currentColor">{escape(unit)}</text>'
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end" font-size="9" fill="currentColor"'
        ' opacity="0.7">UTC</text>'
    )
    for index, item in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        coords = " ".join(
            f"{LEFT + plot_w * (minute - start) / span:.1f},{TOP + plot_h - plot_h * min(value, top) / top:.1f}"
            for minute, value in item.points
        )
        parts.append(
            f'<polyline data-series="{escape(item.name)}" data-points="{len(item.points)}" fill="none"'
            f' stroke="{colour}" stroke-width="1.5" points="{coords}"/>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts) + _legend([s.name for s in series]))  # every value above is escaped


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], *, unit: str) -> SafeString:
    """One bar per label, drawn as one ``<path>`` (the series) carrying ``data-points``."""
    height = max(60, 18 * len(values) + 20)
    label_w, plot_w = 190, WIDTH - 190 - 70
    top = _nice_max(max(values, default=0.0))
    parts = [
        f'<svg class="scaleops-chart" viewBox="0 0 {WIDTH} {height}" width="100%" role="img"'
        f' xmlns="http://www.w3.org/2000/svg" aria-label="{escape(title)}" data-unit="{escape(unit)}">',
        f"<title>{escape(title)} ({escape(unit)})</title>",
    ]
    path = []
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 10 + index * 18
        width = plot_w * value / top
        path.append(f"M{label_w} {y} h{width:.1f} v14 h{-width:.1f} Z")
        parts.append(
            f'<text x="{label_w - 4}" y="{y + 11}" text-anchor="end" font-size="10" fill="currentColor">'
            f"{escape(label)}</text>"
            f'<text x="{label_w + width + 4:.1f}" y="{y + 11}" font-size="10" fill="currentColor">'
            f"{escape(_number(value, unit))}</text>"
        )
    parts.append(
        f'<path data-series="{escape(title)}" data-points="{len(values)}" fill="{PALETTE[0]}" d="{" ".join(path)}"/>'
    )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every value above is escaped
