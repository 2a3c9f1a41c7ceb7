"""Which webhooks receive an event.

Matching is done in Python over the active webhooks, not with JSON lookups in SQL, so it works
the same on SQLite and PostgreSQL (``JSONField__contains`` is not supported on SQLite). The
active-webhook table is small next to the event stream.
"""

from __future__ import annotations

from collections.abc import Iterable

from webhooks_app.models import Webhook


def pattern_matches(pattern: str, event_name: str) -> bool:
    """``*`` matches everything, ``user.*`` every name under ``user.``, anything else itself."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_name.startswith(pattern[:-1])
    return pattern == event_name


def is_subscribed(
    events: Iterable[str], models: Iterable[str], event_name: str, model_name: str
) -> bool:
    """An empty ``events`` list means every event; an empty ``models`` list every model.

    A non-empty ``models`` list narrows the webhook to events about those models, so events
    without a model (custom events) do not reach it.
    """
    events = list(events or [])
    models = list(models or [])
    if events and not any(pattern_matches(pattern, event_name) for pattern in events):
        return False
    return not models or model_name in models


def subscribed_webhooks(event_name: str, model_name: str, *, using: str) -> list[Webhook]:
    webhooks = Webhook.objects.using(using).active().only("id", "events", "models", "retries")
    return [
        webhook
        for webhook in webhooks
        if is_subscribed(webhook.events, webhook.models, event_name, model_name)
    ]
