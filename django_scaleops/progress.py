"""A small progress bar for management commands, written through ``self.stdout``."""

from __future__ import annotations

import time
from typing import TextIO

from django.core.management.base import OutputWrapper


class ProgressBar:
    """Redraws one line on a terminal; on a pipe or file, prints a line every ``every`` percent.

    Use as a context manager and call ``advance(n)`` as work completes.
    """

    def __init__(
        self, out: OutputWrapper | TextIO, total: int, label: str = "", width: int = 30, every: int = 10
    ) -> None:
        self.out = out if isinstance(out, OutputWrapper) else OutputWrapper(out)
        self.total = max(total, 0)
        self.label = label
        self.width = width
        self.every = every
        self.done = 0
        self.started = time.monotonic()
        self._last_step = -1
        self._tty = self.out.isatty()

    def __enter__(self) -> ProgressBar:
        self._draw(force=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._draw(force=self._tty)
        if self._tty:
            self.out.write("")

    def advance(self, count: int = 1) -> None:
        self.done = min(self.done + count, self.total) if self.total else self.done + count
        self._draw()

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def _draw(self, force: bool = False) -> None:
        percent = int(self.fraction * 100)
        step = percent if self._tty else percent // self.every
        if step == self._last_step and not force:
            return
        self._last_step = step
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        filled = int(self.fraction * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"{self.label} [{bar}] {percent:3d}% {self.done}/{self.total} ({rate:,.0f}/s)"
        if self._tty:
            self.out.write("\r" + line, ending="")
        else:
            self.out.write(line)
        self.out.flush()
