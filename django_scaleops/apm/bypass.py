"""In a request the shared decision dropped, Redis calls skip both vendors' instrumentation.

Sentry's and ddtrace's Redis integrations build a span for every command, sampled or not, and
throw it away at the end of a dropped request: on the example API that was most of what a dropped
request cost beyond logging (see docs/apm.md, "Where the time goes"). ``capture()`` keeps the
methods as they are before either SDK patches them; ``install()``, once both are set up, puts a
method in front of each patched one that calls the original inside a dropped request and the
vendors' otherwise (kept requests, and work outside any request, keep their Redis spans).
A dropped request's Sentry error event then carries no Redis breadcrumbs (its log lines still are).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

from django_scaleops.apm.tracing import in_dropped_request

# (module, class, method) of the Redis client calls both SDKs instrument, sync and asyncio alike:
# a plain function returns the coroutine of an ``async def`` as it is.
TARGETS: tuple[tuple[str, str, str], ...] = (
    ("redis.client", "Redis", "execute_command"),
    ("redis.client", "Pipeline", "execute"),
    ("redis.client", "Pipeline", "immediate_execute_command"),
    ("redis.asyncio.client", "Redis", "execute_command"),
    ("redis.asyncio.client", "Pipeline", "execute"),
    ("redis.asyncio.client", "Pipeline", "immediate_execute_command"),
)

Originals = dict[tuple[type, str], Any]


def capture() -> Originals:
    """The target methods as they are now (call before either SDK is set up)."""
    originals: Originals = {}
    for module_name, class_name, method in TARGETS:
        try:
            owner = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue
        if method in owner.__dict__:
            originals[(owner, method)] = owner.__dict__[method]
    return originals


def install(originals: Originals) -> int:
    """Route each target that an SDK has patched since ``capture()``. Returns how many were."""
    routed = 0
    for (owner, method), original in originals.items():
        instrumented = owner.__dict__.get(method)
        if instrumented is None or instrumented is original or getattr(instrumented, "scaleops_bypass", False):
            continue
        setattr(owner, method, _routing(owner, original, instrumented))
        routed += 1
    return routed


def _routing(owner: type, original: Any, instrumented: Any) -> Callable[..., Any]:
    # Bound through the descriptor protocol at each call: ddtrace's wrappers (wrapt) find the
    # client they were called on only when bound that way.
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        chosen = original if in_dropped_request() else instrumented
        return chosen.__get__(self, owner)(*args, **kwargs)

    functools.update_wrapper(call, original)
    call.scaleops_bypass = True  # type: ignore[attr-defined]
    return call
