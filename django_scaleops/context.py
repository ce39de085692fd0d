"""Request-scoped state kept in ContextVars (never ``threading.local``: coroutines share a thread).

Only plain strings cross into thread pools, management commands and background tasks: the request
ID is copied as a ``str``, never the whole context, so nothing unserialisable reaches a task queue.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

# The only request IDs accepted from outside: short, and harmless in headers, logs and URLs.
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# The logger of the one line each request writes (django_scaleops/logging/middleware.py).
REQUEST_LOGGER = "django_scaleops.request"

request_id_var: ContextVar[str | None] = ContextVar("scaleops_request_id", default=None)
# Set by the API-key throttle (issue 10) so the request log line can name the key by its prefix.
api_key_prefix_var: ContextVar[str | None] = ContextVar("scaleops_api_key_prefix", default=None)


def is_safe_request_id(value: str | None) -> bool:
    return value is not None and SAFE_REQUEST_ID.fullmatch(value) is not None


def new_request_id() -> str:
    return uuid.uuid4().hex


def get_request_id() -> str | None:
    """The request ID of the current request, task or command, or ``None`` outside one."""
    return request_id_var.get()


@contextmanager
def request_id_scope(request_id: str | None = None) -> Iterator[str]:
    """Run a block under ``request_id`` (a new UUID4 when missing or unsafe), then restore the old one.

    For management commands and background tasks::

        with request_id_scope(task_kwargs.get("request_id")):
            ...
    """
    value = request_id if is_safe_request_id(request_id) else new_request_id()
    assert value is not None
    token = request_id_var.set(value)
    try:
        yield value
    finally:
        request_id_var.reset(token)


def with_request_id(func: Callable[P, R]) -> Callable[P, R]:
    """Wrap ``func`` so that it runs under the caller's request ID, e.g. in a thread pool::

    executor.submit(with_request_id(send_receipt), order_id)
    """
    captured = request_id_var.get()

    @functools.wraps(func)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        token = request_id_var.set(captured)
        try:
            return func(*args, **kwargs)
        finally:
            request_id_var.reset(token)

    return run


def task_headers() -> dict[str, str]:
    """The request ID as a plain-string mapping, to pass to a task queue (``apply_async(headers=...)``)."""
    request_id = request_id_var.get()
    return {"request_id": request_id} if request_id else {}
