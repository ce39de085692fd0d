"""``ReplicaRoutingMiddleware``: per-request routing state and the read-your-writes cookie.

Put it early in ``MIDDLEWARE`` (before anything that reads the database). For each request it
starts a fresh routing state (one replica per request, no state shared between concurrent
requests), reads the client's last write position from a signed cookie and, when the request
wrote, sends the new position back.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponseBase

from django_scaleops.conf import conf
from django_scaleops.hybrid import HybridMiddleware
from django_scaleops.replicas.lsn import format_lsn, parse_lsn
from django_scaleops.replicas.routing import get_pool
from django_scaleops.replicas.state import RoutingState, _state

COOKIE_SALT = "django_scaleops.router.read-your-writes"


class ReplicaRoutingMiddleware(HybridMiddleware):
    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        state = self.start(request)
        token = _state.set(state)
        try:
            response: HttpResponseBase = self.get_response(request)
            self.finish(state, request, response)
            return response
        finally:
            _state.reset(token)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        state = self.start(request)
        token = _state.set(state)
        try:
            get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
            response = await get_response(request)
            if state.wrote or _moved(state) or state.pin_until > time.time():
                await sync_to_async(self.finish)(state, request, response)
            return response
        finally:
            _state.reset(token)

    def start(self, request: HttpRequest) -> RoutingState:
        state = RoutingState()
        value = request.get_signed_cookie(
            conf.SCALEOPS_ROUTER_COOKIE_NAME,
            default=None,
            salt=COOKIE_SALT,
            max_age=conf.SCALEOPS_ROUTER_COOKIE_MAX_AGE,
        )
        if value:
            # "LSN", "LSN;PIN" or "LSN;PIN;TIMELINE" (PIN may be empty); cookies written before
            # timelines were recorded have no third field and are compared by LSN alone.
            lsn, _, rest = value.partition(";")
            pin_until, _, timeline = rest.partition(";")
            try:
                state.min_lsn = state.incoming_lsn = parse_lsn(lsn)
                state.pin_until = float(pin_until or 0)
                state.timeline = state.incoming_timeline = int(timeline) if timeline else None
            except ValueError:
                pass  # a cookie we did not write (signed, so only an old format): ignore it
        return state

    def finish(self, state: RoutingState, request: HttpRequest, response: HttpResponseBase) -> None:
        pool = get_pool()
        if pool is not None and state.wrote:
            pool.resolve_write_position(state)
        pinned = state.pin_until > time.time()
        if _moved(state) or pinned:
            value = format_lsn(state.min_lsn) + (f";{state.pin_until:.0f}" if pinned else "")
            if state.timeline is not None:
                value += f"{'' if pinned else ';'};{state.timeline}"
            response.set_signed_cookie(
                conf.SCALEOPS_ROUTER_COOKIE_NAME,
                value,
                salt=COOKIE_SALT,
                max_age=conf.SCALEOPS_ROUTER_COOKIE_MAX_AGE,
                secure=request.is_secure(),
                httponly=True,
                samesite="Lax",
            )


def _moved(state: RoutingState) -> bool:
    # A new position, or the same client's position replaced by one of the new timeline.
    return state.min_lsn > state.incoming_lsn or state.timeline != state.incoming_timeline


__all__ = ["ReplicaRoutingMiddleware"]
