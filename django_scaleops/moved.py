"""Old import paths of modules that moved: each warns once and hands every name on to the new module."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def moved(old: str, new: str) -> Callable[[str], Any]:
    """Warn that ``old`` moved to ``new``; returns the ``__getattr__`` of the old module.

    In the old module: ``__getattr__ = moved(__name__, "django_scaleops.new.place")``.
    """
    warnings.warn(f"{old} is deprecated: import from {new}", DeprecationWarning, stacklevel=3)

    def forward(name: str) -> Any:
        return getattr(importlib.import_module(new), name)

    return forward
