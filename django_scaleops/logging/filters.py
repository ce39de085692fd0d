"""Logging filters: the request ID on every record, and masking for handlers with foreign formatters."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django_scaleops.context import request_id_var
from django_scaleops.logging.masking import MASK, Masker, get_masker

# What every LogRecord has; anything else on a record came from ``extra=`` (or a filter).
STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
}


def mask_arguments(record: logging.LogRecord, masker: Masker) -> None:
    """Mask ``record.msg`` and every argument of a record whose message cannot be formatted.

    ``logger.info("password=%s %s", pw)``: the handler fails to format it and reports it through
    ``handleError``, which prints the message and the arguments. With the message unformattable,
    no argument can be told apart by its context, so each one but numbers is masked whole (the
    shape of ``args`` is kept: the report still shows how many there were).
    """
    record.msg = masker.mask_text(record.msg) if isinstance(record.msg, str) else masker.mask(record.msg)
    args = record.args
    if isinstance(args, tuple):
        record.args = tuple(_masked_argument(arg) for arg in args)
    elif isinstance(args, Mapping):
        record.args = {key: _masked_argument(value) for key, value in args.items()}


def mask_extra(masker: Masker, key: str, value: Any) -> Any:
    """The value to leave on a record for an extra, masked: records are shared by every handler.

    Strings and containers get masked copies. Any other object (Django puts the request on its
    records, and its admin e-mail handler reads it) stays as it is unless its ``str()``, which a
    formatter would write, shows a secret: then it is replaced by that text, masked.
    """
    if masker.is_sensitive_key(key):
        return MASK
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (str, bytes, Mapping, list, tuple, set, frozenset)):
        return masker.mask(value, 1)
    masked = masker.mask(value, 1)
    if not isinstance(masked, str):
        return value  # dates, UUIDs, decimals
    try:
        return value if masked == str(value) else masked
    except Exception:  # a broken __str__: the masker's placeholder
        return masked


def _masked_argument(value: Any) -> Any:
    # Numbers stay numbers, so "%d" fails (or not) as it did before.
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return MASK


class RequestIdFilter(logging.Filter):
    """Set ``record.request_id`` (``"-"`` outside a request) for ``%(request_id)s`` in any format."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get() or "-"
        return True


class MaskingFilter(logging.Filter):
    """Mask a record in place (message, args, extras, exception and stack text) before any handler formats it.

    Our formatters mask on their own; this filter is for handlers whose formatter you do not
    control (e.g. a vendor's log shipper, which may write every extra). Attach it to the handler.
    A record whose ``%``-arguments do not fit its message is let through with both masked: the
    handler's ``emit`` then fails to format it and reports it through ``handleError``, as logging
    does for any bad record; nothing is raised into the application.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        masker = get_masker()
        try:
            message = record.getMessage()
        except Exception:
            mask_arguments(record, masker)
            message = None
        if message is not None:
            record.msg = masker.mask_text(message)
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = masker.mask_text(record.exc_text)
            # The raw exception would be formatted again by the handler: keep only the masked text.
            record.exc_info = None
        if record.stack_info:
            record.stack_info = masker.mask_text(record.stack_info)
        extras = record.__dict__
        for key in [key for key in extras if key not in STANDARD_ATTRIBUTES]:
            extras[key] = mask_extra(masker, key, extras[key])
        return True
