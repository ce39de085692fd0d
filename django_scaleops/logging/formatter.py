"""Log formatters that mask secrets: compact JSON for production, a readable line for development."""

from __future__ import annotations

import logging
from typing import Any

from pythonjsonlogger.json import JsonFormatter as BaseJsonFormatter

from django_scaleops.apm import state
from django_scaleops.apm.tracing import in_dropped_request
from django_scaleops.context import request_id_var
from django_scaleops.logging.masking import Masker, get_masker

# Fields we set ourselves (the request line's too, but not its path); never secrets, not masked.
TRUSTED_FIELDS = frozenset(
    {"timestamp", "level", "logger", "request_id", "dd.trace_id", "dd.span_id", "method", "status", "duration_ms"}
    | {"user_id", "api_key_prefix", "bytes"}
)


def datadog_log_ids() -> dict[str, str]:
    """``dd.trace_id``/``dd.span_id`` of the active span when our Datadog setup runs, else ``{}``."""
    if not state.datadog_active or in_dropped_request():
        # A dropped request's trace never reaches Datadog: no IDs that lead nowhere.
        return {}
    from ddtrace.trace import tracer

    correlation = tracer.get_log_correlation_context()
    if correlation.get("dd.trace_id", "0") == "0":
        return {}
    return {"dd.trace_id": correlation["dd.trace_id"], "dd.span_id": correlation["dd.span_id"]}


class JsonFormatter(BaseJsonFormatter):
    """python-json-logger's ``JsonFormatter`` with a fixed schema, the request ID and masking.

    Each record carries ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
    ``request_id`` and, when ddtrace runs, ``dd.trace_id``/``dd.span_id``; extras follow. The
    message (after %-args), extras, exception and stack text all pass through the masker.

    Args:
        masker: the masker to use (default: the one the ``SCALEOPS_LOG_MASK_*`` settings describe).
        mask: set to ``False`` to turn masking off (not advised).
    """

    def __init__(self, *args: Any, masker: Masker | None = None, mask: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("timestamp", True)
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        if not args and "fmt" not in kwargs:
            args = ("%(levelname)s %(name)s %(message)s",)
        super().__init__(*args, **kwargs)
        self._masker = masker
        self._mask = mask

    @property
    def masker(self) -> Masker:
        # Built on first use: formatters are created while settings may still be loading.
        if self._masker is None:
            self._masker = get_masker()
        return self._masker

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        if log_data.get("request_id") in (None, "-"):  # "-" is RequestIdFilter's for plain formats
            log_data["request_id"] = request_id_var.get()
        log_data.update(datadog_log_ids())

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        if not self._mask:
            return log_data
        masker = self.masker
        for key, value in log_data.items():
            if key in TRUSTED_FIELDS:
                continue
            if masker.is_sensitive_key(key) and key != "message":
                log_data[key] = "[MASKED]"
            elif isinstance(value, str):
                log_data[key] = masker.mask_text(value)
            elif value is not None and not isinstance(value, (bool, int, float)):
                log_data[key] = masker.mask(value, 1)
        return log_data


class ReadableFormatter(logging.Formatter):
    """One masked line per record for development: time, level, request ID, logger, message."""

    default_format = "%(asctime)s %(levelname)-7s [%(request_id)s] %(name)s: %(message)s"

    def __init__(self, fmt: str | None = None, *args: Any, masker: Masker | None = None, **kwargs: Any) -> None:
        super().__init__(fmt or self.default_format, *args, **kwargs)
        self._masker = masker

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get() or "-"
        if self._masker is None:
            self._masker = get_masker()
        return self._masker.mask_text(super().format(record))
