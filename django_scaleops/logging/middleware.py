"""Correlation ID middleware: one safe request ID per request, in a ContextVar, echoed and logged."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.functional import empty

from django_scaleops.apm import state
from django_scaleops.apm.sampling import ENVIRON_KEY, request_id_from_meta
from django_scaleops.conf import conf
from django_scaleops.context import REQUEST_LOGGER, api_key_prefix_var, request_id_var
from django_scaleops.hybrid import HybridMiddleware

request_logger = logging.getLogger(REQUEST_LOGGER)
_NO_TRACE: AbstractContextManager[Any] = nullcontext()


def request_id_for(request: HttpRequest) -> str:
    """The ID chosen earlier in this request (by the APM sampler), a safe header value, or a new UUID4.

    A rejected header value is dropped silently: it is never echoed nor logged.
    """
    scope = getattr(request, "scope", None)
    if scope is not None and isinstance(scope.get(ENVIRON_KEY), str):
        return str(scope[ENVIRON_KEY])
    return request_id_from_meta(request.META)


def _api_key_prefix(request: HttpRequest) -> str | None:
    # The throttle middleware leaves the resolved key (public prefix only) on the request.
    resolved = getattr(request, "scaleops_api_key", None)
    return api_key_prefix_var.get() or getattr(resolved, "prefix", None)


def _user_id(request: HttpRequest) -> Any:
    # Only a user that something already loaded: resolving it here would cost a query (and
    # is not allowed on the async path).
    user = request.__dict__.get("user")
    if user is None:
        return None
    wrapped = getattr(user, "_wrapped", user)
    if wrapped is empty:
        return None
    return wrapped.pk if getattr(wrapped, "is_authenticated", False) else None


class CorrelationIdMiddleware(HybridMiddleware):
    """Put the request ID in ``request_id_var`` for the whole request, echo it, log one line.

    Place it first in ``MIDDLEWARE`` so every other middleware logs with the ID.
    """

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        request_id = self._start(request)
        token = request_id_var.set(request_id)
        # Whoever identifies the API key sets this during the request; never carry it over.
        key_token = api_key_prefix_var.set(None)
        started = time.perf_counter()
        try:
            with self._tracing(request, request_id) as trace:
                response: HttpResponseBase = self.get_response(request)
                if trace is not None:
                    trace.response = response
                return self._finish(request, response, request_id, started)
        finally:
            api_key_prefix_var.reset(key_token)
            request_id_var.reset(token)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        request_id = self._start(request)
        token = request_id_var.set(request_id)
        key_token = api_key_prefix_var.set(None)
        started = time.perf_counter()
        try:
            with self._tracing(request, request_id) as trace:
                get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
                response = await get_response(request)
                if trace is not None:
                    trace.response = response
                return self._finish(request, response, request_id, started)
        finally:
            api_key_prefix_var.reset(key_token)
            request_id_var.reset(token)

    def _start(self, request: HttpRequest) -> str:
        request_id = request_id_for(request)
        request.request_id = request_id  # type: ignore[attr-defined]
        if (state.sentry_active or state.datadog_active) and not state.request_tracing:
            # The vendors' own Django integrations trace the request; we only tag and decide.
            from django_scaleops.apm.request import annotate_request

            annotate_request(request_id, request.path)
        return request_id

    @staticmethod
    def _tracing(request: HttpRequest, request_id: str) -> AbstractContextManager[Any]:
        """The request's APM tracing (``RequestTrace``) when ours runs, else a no-op."""
        if not state.request_tracing:
            return _NO_TRACE
        from django_scaleops.apm.tracing import RequestTrace

        return RequestTrace(request, request_id)

    def _finish(
        self, request: HttpRequest, response: HttpResponseBase, request_id: str, started: float
    ) -> HttpResponseBase:
        response.headers[conf.SCALEOPS_LOG_RESPONSE_HEADER] = request_id
        # Health and metrics endpoints mark themselves exempt, wherever the URLconf mounts them.
        should_log = (
            conf.SCALEOPS_LOG_REQUESTS
            and not getattr(request, "scaleops_exempt", False)
            and not request.path.startswith(tuple(conf.SCALEOPS_LOG_EXCLUDE_PATHS))
        )
        if not response.streaming:
            if should_log:
                log_request(request, response.status_code, started, len(getattr(response, "content", b"")))
            return response
        # Streaming: the body is produced after we return, so carry the ID into each chunk and
        # log once the last chunk has gone (bytes are known only then).
        done = _StreamDone(request, response.status_code, started, request_id, should_log)
        if response.is_async:  # type: ignore[attr-defined]
            response.streaming_content = _aiter_with_id(response.streaming_content, done)  # type: ignore[attr-defined]
        else:
            response.streaming_content = _iter_with_id(response.streaming_content, done)  # type: ignore[attr-defined]
        return response


class _StreamDone:
    def __init__(self, request: HttpRequest, status: int, started: float, request_id: str, log: bool) -> None:
        self.request, self.status, self.started, self.request_id, self.log = request, status, started, request_id, log

    def __call__(self, sent: int) -> None:
        if not self.log:
            return
        token = request_id_var.set(self.request_id)
        try:
            log_request(self.request, self.status, self.started, sent)
        finally:
            request_id_var.reset(token)


def _iter_with_id(content: Iterator[bytes], done: _StreamDone) -> Iterator[bytes]:
    sent = 0
    try:
        while True:
            token = request_id_var.set(done.request_id)
            try:
                chunk = next(content)
            except StopIteration:
                break
            finally:
                request_id_var.reset(token)
            sent += len(chunk)
            yield chunk
    finally:
        done(sent)


async def _aiter_with_id(content: AsyncIterator[bytes], done: _StreamDone) -> AsyncIterator[bytes]:
    sent = 0
    try:
        while True:
            token = request_id_var.set(done.request_id)
            try:
                chunk = await content.__anext__()
            except StopAsyncIteration:
                break
            finally:
                request_id_var.reset(token)
            sent += len(chunk)
            yield chunk
    finally:
        done(sent)


def log_request(request: HttpRequest, status: int, started: float, sent: int) -> None:
    """Write the request line: method, path, status, duration, user, API key prefix, bytes."""
    level = logging.getLevelName(conf.SCALEOPS_LOG_REQUEST_LEVEL.upper())
    if not isinstance(level, int) or not request_logger.isEnabledFor(level):
        return
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    request_logger.log(
        level,
        "%s %s %s %.1fms",
        request.method,
        request.path,
        status,
        duration_ms,
        extra={
            "method": request.method,
            "path": request.path,
            "status": status,
            "duration_ms": duration_ms,
            "user_id": _user_id(request),
            # The throttle middleware leaves the resolved key (public prefix only) on the request.
            "api_key_prefix": api_key_prefix_var.get()
            or getattr(getattr(request, "scaleops_api_key", None), "prefix", None),
            "bytes": sent,
        },
    )
