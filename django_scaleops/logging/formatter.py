"""Log formatters that mask secrets: compact JSON for production, a readable line for development."""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonEncoder
from pythonjsonlogger.json import JsonFormatter as BaseJsonFormatter

from django_scaleops.apm import state
from django_scaleops.apm.tracing import in_dropped_request
from django_scaleops.context import request_id_var
from django_scaleops.logging.filters import mask_arguments, mask_extra
from django_scaleops.logging.masking import MASK, Masker, get_masker

try:  # the ``orjson`` extra: serialization about ten times as fast as the json module's
    import orjson

    HAVE_ORJSON = True
except ImportError:  # pragma: no cover - the json module's path is tested with use_orjson=False
    HAVE_ORJSON = False

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
        use_orjson: serialize with orjson when it is installed (the ``orjson`` extra); same output.
    """

    def __init__(
        self, *args: Any, masker: Masker | None = None, mask: bool = True, use_orjson: bool = True, **kwargs: Any
    ) -> None:
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
        self._fast_plan = self._plan_fast_path()
        self._dumps = self._serializer(use_orjson)

    def _plan_fast_path(self) -> tuple[tuple[str, str], ...] | None:
        """The (field, output name) pairs of the one-pass ``format``, or None when it does not apply.

        The one-pass path writes what python-json-logger's ``format`` would (same fields, order and
        renames) without its layers of calls; options it does not reproduce (defaults, static
        fields, arrays of lines, a subclass overriding a step) keep the library's path.
        """
        own = JsonFormatter
        steps = ("add_fields", "process_log_record", "serialize_log_record", "jsonify_log_record", "format")
        if any(getattr(type(self), step) is not getattr(own, step) for step in steps):
            return None
        if self.defaults or self.static_fields or self.rename_fields_keep_missing:
            return None
        if self.exc_info_as_array or self.stack_info_as_array or self.timestamp:
            return None
        if "asctime" in self._required_fields:
            return None
        return tuple((field, self.rename_fields.get(field, field)) for field in self._required_fields)

    def _serializer(self, use_orjson: bool) -> Callable[[dict[str, Any]], str]:
        """``log_data`` to JSON: one encoder made once (``json.dumps`` makes one per record), or orjson.

        orjson is used when installed and the output would be the json module's: default encoder
        options, ASCII output (a line with other characters, an integer beyond 64 bits or a lone
        surrogate goes through the json module instead). Types orjson leaves to a hook (dates,
        exceptions, anything else) get the json encoder's own ``default``.
        """
        if self.json_serializer is not json.dumps:  # the user's own: called as the library does
            return functools.partial(BaseJsonFormatter.jsonify_log_record, self)
        encoder_class = self.json_encoder or json.JSONEncoder
        # Compact separators, as orjson writes them: every line looks the same whichever encodes it.
        separators = (",", ":") if self.json_indent is None else None
        encoder = encoder_class(
            default=self.json_default,
            indent=self.json_indent,
            ensure_ascii=self.json_ensure_ascii,
            separators=separators,
        )
        encode: Callable[[Any], str] = encoder.encode
        if not (use_orjson and HAVE_ORJSON and encoder_class is JsonEncoder and self.json_default is None):
            return encode
        if self.json_indent is not None or not self.json_ensure_ascii:
            return encode
        dumps, default, error = orjson.dumps, encoder.default, orjson.JSONEncodeError
        options = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS

        def serialize(log_data: dict[str, Any]) -> str:
            try:
                text: str = dumps(log_data, default=default, option=options).decode()
            except (error, TypeError):
                return encode(log_data)
            return text if text.isascii() else encode(log_data)

        return serialize

    @property
    def masker(self) -> Masker:
        # Built on first use: formatters are created while settings may still be loading.
        if self._masker is None:
            self._masker = get_masker()
        return self._masker

    def format(self, record: logging.LogRecord) -> str:
        plan = self._fast_plan
        if plan is None or isinstance(record.msg, dict):
            try:
                return super().format(record)
            except Exception:
                # Bad %-arguments: the handler reports the record through handleError, which
                # prints its message and arguments; mask them first.
                if self._mask:
                    mask_arguments(record, self.masker)
                raise
        # One pass: python-json-logger's format, add_fields and merge_record_extra, with each
        # value masked as it is added (process_log_record's rules, the same result).
        try:
            record.message = record.getMessage()
        except Exception:
            if self._mask:
                mask_arguments(record, self.masker)
            raise
        fields = record.__dict__
        rename = self.rename_fields
        exc_text = self.formatException(record.exc_info) if record.exc_info else None
        if not exc_text and record.exc_text:
            exc_text = record.exc_text
        stack_text = self.formatStack(record.stack_info) if record.stack_info else None
        skip = self._skip_fields
        if not self._mask:
            log_data = {name: fields.get(field) for field, name in plan}
            if exc_text is not None:
                log_data[rename.get("exc_info", "exc_info")] = exc_text
            if stack_text is not None:
                log_data[rename.get("stack_info", "stack_info")] = stack_text
            for key, value in fields.items():
                if key not in skip and not key.startswith("_"):
                    log_data[rename.get(key, key)] = value
            self._add_own_fields(log_data, record)
            return self.prefix + self._dumps(log_data)
        masker = self.masker
        mask_text, is_sensitive_key, masked = masker.mask_text, masker.is_sensitive_key, self._masked
        log_data = {}
        for field, name in plan:
            value = fields.get(field)
            log_data[name] = value if name in TRUSTED_FIELDS or value is None else masked(name, value)
        if exc_text is not None:
            name = rename.get("exc_info", "exc_info")
            log_data[name] = masked(name, exc_text)
        if stack_text is not None:
            name = rename.get("stack_info", "stack_info")
            log_data[name] = masked(name, stack_text)
        for key, value in fields.items():
            if key in skip or key.startswith("_"):
                continue
            name = rename.get(key, key)
            if name in TRUSTED_FIELDS or value is None:
                log_data[name] = value
            elif type(value) is str and name != "message":  # the common cases, inline
                log_data[name] = MASK if is_sensitive_key(name) else mask_text(value)
            elif type(value) is int:
                log_data[name] = MASK if is_sensitive_key(name) else value
            else:
                log_data[name] = masked(name, value)
        # Ours (timestamp, request ID, Datadog IDs) are trusted fields: never masked.
        self._add_own_fields(log_data, record)
        return self.prefix + self._dumps(log_data)

    def _masked(self, key: str, value: Any) -> Any:
        """``value`` as ``process_log_record`` leaves it under ``key`` (not None, key not trusted)."""
        masker = self.masker
        if isinstance(value, str):
            return MASK if key != "message" and masker.is_sensitive_key(key) else masker.mask_text(value)
        if not isinstance(value, (bool, int, float)):
            return MASK if masker.is_sensitive_key(key) else masker.mask(value, 1)
        return MASK if masker.is_sensitive_key(key) else value

    def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
        return self._dumps(log_data)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        self._add_own_fields(log_data, record)

    def _add_own_fields(self, log_data: dict[str, Any], record: logging.LogRecord) -> None:
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
        masked = self._masked
        for key, value in log_data.items():
            if key not in TRUSTED_FIELDS and value is not None:
                log_data[key] = masked(key, value)
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
