"""JSON logging with the request ID and secret masking: formatters, filters, a LOGGING helper."""

from __future__ import annotations

from django_scaleops.logging.config import build_logging
from django_scaleops.logging.filters import MaskingFilter, RequestIdFilter
from django_scaleops.logging.formatter import JsonFormatter, ReadableFormatter
from django_scaleops.logging.masking import Masker, get_masker

__all__ = [
    "JsonFormatter",
    "Masker",
    "MaskingFilter",
    "ReadableFormatter",
    "RequestIdFilter",
    "build_logging",
    "get_masker",
]
