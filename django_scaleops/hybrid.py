"""The sync-and-async plumbing every django-scaleops middleware shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest


class HybridMiddleware:
    """A middleware that runs natively under WSGI and ASGI.

    Subclasses implement ``__call__`` and, for the async chain, ``__acall__``; ``__call__``
    returns ``self.__acall__(request)`` when ``self.async_mode`` is set.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        raise NotImplementedError
