"""Which webhooks receive an event.

Two questions, answered in two places:

* ``anyone_subscribed()`` runs in the writer, on every watched save: is there any webhook
  this event could go to (active, or disabled: its deliveries are kept as skipped)? It
  reads a per-process copy of the subscriptions, refreshed every
  ``SUBSCRIPTION_CACHE_SECONDS`` and at once when this process saves or deletes a webhook,
  so a save costs no query for it. Another process sees a new or changed webhook within
  ``SUBSCRIPTION_CACHE_SECONDS``.
* ``receiving_webhooks()`` runs in the worker when it creates an event's deliveries, against
  the webhooks as they are then (one query per batch of events). A webhook disabled since
  the save gets them as skipped; the copy in the writer only decides whether an event is
  stored.

Matching is done in Python over the active webhooks, not with JSON lookups in SQL, so it works
the same on SQLite and PostgreSQL (``JSONField__contains`` is not supported on SQLite). The
active-webhook table is small next to the event stream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

from webhooks_app import statements, sync
from webhooks_app.conf import app_settings
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


def matching(webhooks: Sequence[Webhook], event_name: str, model_name: str) -> list[Webhook]:
    return [w for w in webhooks if is_subscribed(w.events, w.models, event_name, model_name)]


def active_webhooks(using: str) -> list[Webhook]:
    """The active webhooks with every field a delivery needs, as they are now."""
    return list(Webhook.objects.using(using).active().order_by("id"))


def _receiving(using: str) -> Any:
    return Webhook.objects.using(using).receiving().order_by("id")


def receiving_webhooks(using: str) -> list[Webhook]:
    """The webhooks an event makes deliveries for now (``Webhook.objects.receiving()``):
    the active ones, and disabled ones, whose deliveries are created skipped. Read in
    every claim that fans out, so the SQL is compiled once (``statements.instances``)."""
    return cast(list[Webhook], statements.instances("receiving webhooks", using, _receiving))


def subscribed_webhooks(event_name: str, model_name: str, *, using: str) -> list[Webhook]:
    return matching(active_webhooks(using), event_name, model_name)


class _Subscriptions:
    """One process's copy of the receiving webhooks' (events, models), per database."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.copies: dict[str, tuple[float, list[tuple[list[str], list[str]]]]] = {}

    def get(self, using: str) -> list[tuple[list[str], list[str]]]:
        copy = self.copies.get(using)
        if copy is not None and time.monotonic() < copy[0]:
            return copy[1]
        # Endpoints declared in settings become rows first, so they are in the copy. (Not
        # under the lock: creating them sends post_save, which calls forget().)
        sync.ensure_synced(using=using)
        with self.lock:
            # Disabled webhooks too: their events are kept, as skipped deliveries.
            rows = Webhook.objects.using(using).receiving().values_list("events", "models")
            subscriptions = [(list(events or []), list(models or [])) for events, models in rows]
            ttl = float(app_settings.SUBSCRIPTION_CACHE_SECONDS)
            self.copies[using] = (time.monotonic() + ttl, subscriptions)
            return subscriptions

    def forget(self) -> None:
        # One assignment: safe without the lock, and never waits for a refresh in progress.
        self.copies = {}


_subscriptions = _Subscriptions()


def anyone_subscribed(event_name: str, model_name: str, *, using: str) -> bool:
    """Whether a receiving webhook (as this process last saw them) wants this event."""
    return any(
        is_subscribed(events, models, event_name, model_name)
        for events, models in _subscriptions.get(using)
    )


def forget(**kwargs: Any) -> None:
    """Drop this process's copy; connected to Webhook's post_save and post_delete."""
    _subscriptions.forget()
