"""Span and metric helpers that go to whichever vendors run, and cost next to nothing when none does.

Each span helper works as a context manager (``with`` / ``async with``) and as a decorator of
sync or async functions::

    with database_span("orders.rebuild_totals"):
        ...

    @external_api_span("stripe", url="https://api.stripe.com/v1/charges")
    async def charge(...): ...
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import iscoroutinefunction

from django_scaleops.apm import state, tracing

P = ParamSpec("P")
R = TypeVar("R")


class Span:
    """A span in every active vendor; see ``custom_span``."""

    def __init__(
        self,
        name: str,
        *,
        op: str = "custom",
        span_type: str | None = None,
        resource: str | None = None,
        tags: dict[str, Any] | None = None,
    ) -> None:
        self.name, self.op, self.span_type, self.resource = name, op, span_type, resource
        self.tags = tags or {}
        self._stack: ExitStack | None = None

    def __enter__(self) -> Span:
        if not (state.sentry_active or state.datadog_active) or tracing.in_dropped_request():
            # Nothing of a dropped request is sent: skip building spans for it.
            return self
        from django_scaleops.logging.masking import MASK, get_masker

        masker = get_masker()
        # A sensitive key's value is masked whole, as in the logs (a bare password has no shape).
        tags = {
            key: MASK if masker.is_sensitive_key(key) else masker.mask_text(str(value))
            for key, value in self.tags.items()
        }
        stack = ExitStack()
        if state.datadog_active:
            from ddtrace.trace import tracer

            dd_span = stack.enter_context(
                tracer.trace(self.name, resource=self.resource or self.name, span_type=self.span_type)
            )
            for key, value in tags.items():
                dd_span.set_tag(key, value)
        if state.sentry_active:
            import sentry_sdk

            sentry_span = stack.enter_context(sentry_sdk.start_span(op=self.op, name=self.resource or self.name))
            for key, value in tags.items():
                sentry_span.set_tag(key, value)
        self._stack = stack
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _fresh(self) -> Span:
        return Span(self.name, op=self.op, span_type=self.span_type, resource=self.resource, tags=self.tags)

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        if iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with self._fresh():
                    return await func(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with self._fresh():
                return func(*args, **kwargs)

        return run


def custom_span(name: str, *, resource: str | None = None, tags: dict[str, Any] | None = None) -> Span:
    """A span named ``name`` (tags are masked like logs)."""
    return Span(name, op="function", resource=resource, tags=tags)


def database_span(name: str, *, db: str = "postgresql", tags: dict[str, Any] | None = None) -> Span:
    """A span around database work that is not one query (a batch, a report)."""
    return Span("db.operation", op="db", span_type="sql", resource=name, tags={"db.system": db, **(tags or {})})


def external_api_span(service: str, *, url: str | None = None, tags: dict[str, Any] | None = None) -> Span:
    """A span around a call to another service; ``url`` is masked (query-string secrets)."""
    extra = {"peer.service": service, **({"http.url": url} if url else {}), **(tags or {})}
    return Span("http.client.request", op="http.client", span_type="http", resource=service, tags=extra)


# ---- metrics


@dataclass
class _Figure:
    count: int = 0
    total: float = 0.0
    last: float = 0.0


_figures: dict[str, _Figure] = {}
_figures_lock = threading.Lock()


def record_metric(name: str, value: float, *, kind: str = "distribution", tags: dict[str, str] | None = None) -> None:
    """Record a figure: kept in-process (published under ``apm`` by the metrics registry), set on the
    current Datadog span, and sent as a Sentry metric when those run.

    Args:
        kind: ``"distribution"``, ``"gauge"`` or ``"count"``.
    """
    with _figures_lock:
        figure = _figures.setdefault(name, _Figure())
        figure.count += 1
        figure.total += value
        figure.last = value
    if state.datadog_active:
        from ddtrace.trace import tracer

        span = tracer.current_span()
        if span is not None:
            span.set_metric(name, value)
    if state.sentry_active:
        from sentry_sdk import metrics

        # Older 2.x releases have no metrics API (it came back, reworked, in later 2.x).
        sender = getattr(metrics, {"gauge": "gauge", "count": "count"}.get(kind, "distribution"), None)
        if sender is not None:
            sender(name, value, attributes=dict(tags or {}))


def metric_figures() -> dict[str, Any]:
    """The in-process figures of ``record_metric`` (the ``apm`` metrics source)."""
    with _figures_lock:
        return {
            name: {"count": f.count, "total": f.total, "last": f.last, "mean": f.total / f.count if f.count else 0.0}
            for name, f in sorted(_figures.items())
        }


class track_timing:
    """Record how long a block or function takes, in milliseconds, as the metric ``name``."""

    def __init__(self, name: str, *, tags: dict[str, str] | None = None) -> None:
        self.name, self.tags = name, tags
        self._started = 0.0

    def __enter__(self) -> track_timing:
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        record_metric(self.name, (time.perf_counter() - self._started) * 1000, tags=self.tags)

    async def __aenter__(self) -> track_timing:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__(*exc)

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        if iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with track_timing(self.name, tags=self.tags):
                    return await func(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with track_timing(self.name, tags=self.tags):
                return func(*args, **kwargs)

        return run


class measure_performance:
    """A span and a timing metric (``<name>.ms``) in one: ``@measure_performance("checkout")``."""

    def __init__(self, name: str, *, tags: dict[str, Any] | None = None) -> None:
        self.name, self.tags = name, tags
        self._stack: ExitStack | None = None

    def __enter__(self) -> measure_performance:
        self._stack = ExitStack()
        self._stack.enter_context(custom_span(self.name, tags=self.tags))
        self._stack.enter_context(track_timing(f"{self.name}.ms"))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._stack is not None:
            self._stack.__exit__(*exc)

    async def __aenter__(self) -> measure_performance:
        return self.__enter__()

    async def __aexit__(self, *exc: Any) -> None:
        self.__exit__(*exc)

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        return track_timing(f"{self.name}.ms")(custom_span(self.name, tags=self.tags)(func))


@dataclass
class CurrentSpan:
    """The active span of each vendor (``None`` where a vendor is off or has no span)."""

    datadog: Any = None
    sentry: Any = None

    def set_tag(self, key: str, value: Any) -> None:
        """Set a (masked) tag on every vendor's span."""
        from django_scaleops.logging.masking import MASK, get_masker

        masker = get_masker()
        text = MASK if masker.is_sensitive_key(key) else masker.mask_text(str(value))
        if self.datadog is not None:
            self.datadog.set_tag(key, text)
        if self.sentry is not None:
            self.sentry.set_tag(key, text)


def current_span() -> CurrentSpan:
    """The spans active now, one per vendor."""
    found = CurrentSpan()
    if state.datadog_active:
        from ddtrace.trace import tracer

        found.datadog = tracer.current_span()
    if state.sentry_active:
        import sentry_sdk

        found.sentry = sentry_sdk.get_current_span()
    return found
