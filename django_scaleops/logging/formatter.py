"""Log formatters that mask secrets: compact JSON for production, a readable line for development."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter as BaseJsonFormatter

from django_scaleops.apm import state
from django_scaleops.apm.tracing import in_dropped_request
from django_scaleops.context import request_id_var
from django_scaleops.logging.filters import mask_arguments, mask_extra
from django_scaleops.logging.masking import MASK, Masker, get_masker

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
        # The timestamp is added here as an ISO string (what python-json-logger's encoder would
        # make of the datetime): it spares the encoder's Python ``default`` hook on every record.
        self._timestamp_key = kwargs.pop("timestamp", True)
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        if not args and "fmt" not in kwargs:
            args = ("%(levelname)s %(name)s %(message)s",)
        super().__init__(*args, **kwargs)
        if self._timestamp_key is True:
            self._timestamp_key = "timestamp"
        self._masker = masker
        self._mask = mask

    @property
    def masker(self) -> Masker:
        # Built on first use: formatters are created while settings may still be loading.
        if self._masker is None:
            self._masker = get_masker()
        return self._masker

    def format(self, record: logging.LogRecord) -> str:
        try:
            return super().format(record)
        except Exception:
            # Bad %-arguments: the handler reports the record through handleError, which prints
            # its message and arguments; mask them first.
            if self._mask:
                mask_arguments(record, self.masker)
            raise

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        if self._timestamp_key:
            key = self._timestamp_key
            log_data[self.rename_fields.get(key, key)] = datetime.fromtimestamp(record.created, tz=UTC).isoformat()
        if log_data.get("request_id") in (None, "-"):  # "-" is RequestIdFilter's for plain formats
            log_data["request_id"] = request_id_var.get()
        if state.datadog_active:
            log_data.update(datadog_log_ids())

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        if not self._mask:
            return log_data
        masker = self.masker
        mask_text, is_sensitive_key = masker.mask_text, masker.is_sensitive_key
        for key, value in log_data.items():
            if key in TRUSTED_FIELDS or value is None:
                continue
            if isinstance(value, str):
                log_data[key] = MASK if key != "message" and is_sensitive_key(key) else mask_text(value)
            elif not isinstance(value, (bool, int, float)):
                log_data[key] = MASK if is_sensitive_key(key) else masker.mask(value, 1)
            elif is_sensitive_key(key):
                log_data[key] = MASK
        return log_data


# LogRecord attributes a format may show that never carry secrets. The logger name is one of them:
# masking the whole line would read "myapp.auth: ..." as a key and value and swallow the message.
SAFE_RECORD_FIELDS = frozenset(
    {"asctime", "created", "filename", "funcName", "levelname", "levelno", "lineno", "module", "msecs"}
    | {"name", "pathname", "process", "processName", "relativeCreated", "thread", "threadName", "taskName"}
    | {"request_id"}
)


class ReadableFormatter(logging.Formatter):
    """One masked line per record for development: time, level, request ID, logger, message.

    The message, the exception and stack text, and any other field the format names (extras) are
    masked one by one; the line's own fields (time, level, logger name) are not.
    """

    default_format = "%(asctime)s %(levelname)-7s [%(request_id)s] %(name)s: %(message)s"

    def __init__(self, fmt: str | None = None, *args: Any, masker: Masker | None = None, **kwargs: Any) -> None:
        super().__init__(fmt or self.default_format, *args, **kwargs)
        self._masker = masker
        fields = set(re.findall(r"%\((\w+)\)", self._fmt or "")) | set(re.findall(r"\{(\w+)", self._fmt or ""))
        self._masked_fields = tuple(sorted(fields - SAFE_RECORD_FIELDS - {"message"}))

    @property
    def masker(self) -> Masker:
        if self._masker is None:
            self._masker = get_masker()
        return self._masker

    def format(self, record: logging.LogRecord) -> str:
        # logging.Formatter.format, with each variable part masked on its own.
        masker = self.masker
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get() or "-"
        try:
            record.message = record.getMessage()
        except Exception:
            mask_arguments(record, masker)  # handleError prints them: masked
            raise
        record.message = masker.mask_text(record.message)
        for field in self._masked_fields:
            if field in record.__dict__:
                record.__dict__[field] = mask_extra(masker, field, record.__dict__[field])
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            # Masked again: another handler's formatter may have cached it unmasked on the record.
            text += ("" if text.endswith("\n") else "\n") + masker.mask_text(record.exc_text)
        if record.stack_info:
            text += ("" if text.endswith("\n") else "\n") + masker.mask_text(self.formatStack(record.stack_info))
        return text

    def formatException(self, ei: Any) -> str:
        return self.masker.mask_text(super().formatException(ei))
