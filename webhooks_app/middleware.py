"""Makes the request's user the actor of events emitted while the request is handled."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from webhooks_app.actor import reset_actor, set_lazy_actor


class WebhookActorMiddleware:
    """Place after ``AuthenticationMiddleware``; works under WSGI and ASGI."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        token = set_lazy_actor(lambda: getattr(request, "user", None))
        try:
            return self.get_response(request)
        finally:
            reset_actor(token)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        token = set_lazy_actor(lambda: getattr(request, "user", None))
        try:
            response: Awaitable[HttpResponseBase] = self.get_response(request)
            return await response
        finally:
            reset_actor(token)
