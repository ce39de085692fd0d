"""``QueryScopeMiddleware``: opens the per-request query scope the N+1 hint counts in.

Under WSGI the monitor opens it from ``request_started`` without any middleware. Under ASGI,
Django sends that signal from a task of its own (``Signal.asend`` gathers receivers), so a
ContextVar set there never reaches the view: add this middleware to get N+1 hints in ASGI too.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponseBase

from django_scaleops.hybrid import HybridMiddleware
from django_scaleops.monitoring.monitor import request_scope, set_request_scope


class QueryScopeMiddleware(HybridMiddleware):
    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        # ``request_scope()`` without the generator's cost: this runs on every request.
        token = set_request_scope()
        try:
            response: HttpResponseBase = self.get_response(request)
        finally:
            if token is not None:
                token.var.reset(token)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        with request_scope():
            response: HttpResponseBase = await self.get_response(request)
        return response
