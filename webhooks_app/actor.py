"""Who caused a change: the ``user`` of the payload.

A context variable, so it follows the request through threads and async tasks alike. The
middleware sets it for every request; ``acting_as`` sets it for code outside requests
(management commands, tasks, shells).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.utils.module_loading import import_string

from webhooks_app.conf import app_settings

# Holds the user, or a zero-argument callable returning it (the middleware's request.user is
# lazy: resolving it costs a session lookup that only changes to watched models need).
_actor: ContextVar[Any] = ContextVar("webhooks_actor", default=None)


@contextmanager
def acting_as(user: Any) -> Iterator[None]:
    """Attribute events emitted inside the block to ``user`` (``None`` for nobody)."""
    token = _actor.set(user)
    try:
        yield
    finally:
        _actor.reset(token)


def set_lazy_actor(resolve: Callable[[], Any]) -> Any:
    """Set a resolver for the current context; returns the token to reset it with."""
    return _actor.set(resolve)


def reset_actor(token: Any) -> None:
    _actor.reset(token)


def current_actor() -> Any:
    """The user events are attributed to now, or ``None``; anonymous users count as none."""
    value = _actor.get()
    if callable(value) and not hasattr(value, "_meta"):
        value = value()
    if value is None or not getattr(value, "is_authenticated", False):
        return None
    return value


def default_user_data(user: Any) -> dict[str, Any]:
    """``{"id", "name", "email"}``, as in the seed payload."""
    name = ""
    get_full_name = getattr(user, "get_full_name", None)
    if callable(get_full_name):
        name = get_full_name() or ""
    if not name:
        get_username = getattr(user, "get_username", None)
        name = get_username() if callable(get_username) else str(user)
    return {"id": user.pk, "name": name, "email": getattr(user, "email", "") or ""}


def user_data(user: Any) -> dict[str, Any] | None:
    """The ``user`` object of a payload: USER_SERIALIZER's output, or the default shape."""
    if user is None:
        return None
    if isinstance(user, dict):
        return user
    path = app_settings.USER_SERIALIZER
    serializer = import_string(path) if path else default_user_data
    result: dict[str, Any] = serializer(user)
    return result
