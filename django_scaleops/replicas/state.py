"""Routing state held in context variables, so it is per request under WSGI and ASGI alike.

A request (or task, or thread outside a request) carries one ``RoutingState``: the primary WAL
position its reads must see, whether it wrote since that position was last read, and the
replica it reads from.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from inspect import iscoroutinefunction
from typing import TYPE_CHECKING, Any, TypeVar, cast

from django_scaleops.replicas.lsn import format_lsn, parse_lsn

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

F = TypeVar("F", bound=Callable[..., Any])


class ReadRoute:
    """What the router found when it last sent this context's reads to its replica, so that the
    next read can skip the work that found it (``PrimaryReplicaRouter.db_for_read``'s fast path).

    It remembers objects, never a verdict: each read still checks, on these objects, everything
    that may have changed since (the pool, the thread, the transaction, the replica's health,
    its connection and the write position). ``connections[alias]`` costs more than all of that,
    and the wrappers it returns belong to one thread: hence ``thread``.
    """

    __slots__ = ("alias", "health", "pool", "primary", "raw", "replica", "thread")

    def __init__(
        self,
        pool: Any,
        thread: int,
        alias: str,
        primary: BaseDatabaseWrapper,
        replica: BaseDatabaseWrapper,
        health: Any,
    ) -> None:
        # pool and health: routing's ReplicaPool and health's ReplicaHealth (they import this module).
        self.pool = pool
        self.thread = thread
        self.alias = alias
        self.primary = primary
        self.replica = replica
        # The replica's psycopg connection when the route was taken: another one (reconnected,
        # closed) has not been made read-only or probed yet.
        self.raw = replica.connection
        self.health = health


@dataclass
class RoutingState:
    # The primary WAL position this client has written up to: replicas serve it only past it.
    min_lsn: int = 0
    # A statement other than a read ran on the primary since min_lsn was last taken.
    wrote: bool = False
    # Safety net when a write's position could not be read: primary only until then (epoch s).
    pin_until: float = 0.0
    # The one replica this request reads from, so its reads never go backwards.
    replica: str | None = None
    # What the request arrived with (cookie), to know whether to send a new cookie.
    incoming_lsn: int = 0
    # The primary's timeline min_lsn was read on (None: not known, a position from before
    # timelines were recorded). A position from another timeline is not trusted (failover).
    timeline: int | None = None
    incoming_timeline: int | None = None
    # The last read's route to ``replica``, kept to check rather than to find it again.
    route: ReadRoute | None = field(default=None, repr=False, compare=False)


_state: ContextVar[RoutingState | None] = ContextVar("scaleops_routing_state", default=None)
_primary_depth: ContextVar[int] = ContextVar("scaleops_use_primary", default=0)
_migrating: ContextVar[bool] = ContextVar("scaleops_migrating", default=False)


def current_state() -> RoutingState:
    """This context's state; outside a request it is created once per thread or task."""
    state = _state.get()
    if state is None:
        state = RoutingState()
        _state.set(state)
    return state


@contextmanager
def routing_state(state: RoutingState) -> Iterator[RoutingState]:
    token = _state.set(state)
    try:
        yield state
    finally:
        _state.reset(token)


def reset_routing_state() -> None:
    """Forget this context's write position and replica (tests, long-lived workers)."""
    _state.set(RoutingState())


def primary_forced() -> bool:
    return _primary_depth.get() > 0 or _migrating.get()


def set_migrating(value: bool) -> None:
    _migrating.set(value)


class use_primary:
    """Send every read to the primary inside a block or a (sync or async) function.

    ::

        with use_primary():
            order = Order.objects.get(pk=pk)

        @use_primary()
        def view(request): ...
    """

    def __init__(self) -> None:
        self._tokens: list[Token[int]] = []

    def __enter__(self) -> use_primary:
        self._tokens.append(_primary_depth.set(_primary_depth.get() + 1))
        return self

    def __exit__(self, *exc: object) -> None:
        _primary_depth.reset(self._tokens.pop())

    def __call__(self, func: F) -> F:
        if iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_inner(*args: Any, **kwargs: Any) -> Any:
                with use_primary():
                    return await func(*args, **kwargs)

            return cast(F, async_inner)

        @functools.wraps(func)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with use_primary():
                return func(*args, **kwargs)

        return cast(F, inner)


@contextmanager
def restore_read_position(position: str | None) -> Iterator[None]:
    """Read, inside the block, at least what the client that captured ``position`` had written.

    Use it in a background task with the value ``capture_read_position()`` gave the code that
    queued it. ``None`` (nothing written) is accepted and pins nothing.
    """
    state = RoutingState()
    if position:
        # "LSN" (captured before timelines were recorded) or "LSN;;TIMELINE", the cookie's format.
        lsn, _, rest = position.partition(";")
        timeline = rest.partition(";")[2]
        state.min_lsn = state.incoming_lsn = parse_lsn(lsn)
        state.timeline = state.incoming_timeline = int(timeline) if timeline else None
    with routing_state(state):
        yield


def describe(state: RoutingState) -> str | None:
    """The position to hand over: ``LSN;;TIMELINE`` (the cookie's format, no pin), or ``LSN`` when
    the timeline is not known; a position of another timeline than the primary's is not trusted."""
    if not state.min_lsn:
        return None
    lsn = format_lsn(state.min_lsn)
    return f"{lsn};;{state.timeline}" if state.timeline is not None else lsn
