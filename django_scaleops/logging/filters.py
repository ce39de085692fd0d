"""Logging filters: the request ID on every record, and masking for handlers with foreign formatters."""

from __future__ import annotations

import logging

from django_scaleops.context import request_id_var
from django_scaleops.logging.masking import get_masker


class RequestIdFilter(logging.Filter):
    """Set ``record.request_id`` (``"-"`` outside a request) for ``%(request_id)s`` in any format."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get() or "-"
        return True


class MaskingFilter(logging.Filter):
    """Mask a record in place (message, args, exception text) before any handler formats it.

    Our formatters mask on their own; this filter is for handlers whose formatter you do not
    control (e.g. a vendor's log shipper). Attach it to the handler.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        masker = get_masker()
        record.msg = masker.mask_text(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = masker.mask_text(record.exc_text)
            # The raw exception would be formatted again by the handler: keep only the masked text.
            record.exc_info = None
        if record.stack_info:
            record.stack_info = masker.mask_text(record.stack_info)
        return True
