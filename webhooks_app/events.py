"""``emit()``: the one way an Event is created, with the envelope every subscriber receives.

A watched save costs the writer one INSERT: the Event row, in the caller's transaction, marked
``pending_fanout`` (inside a transaction one statement writes all its events: ``outbox``).
After commit a worker is woken; it creates the event's deliveries (one per subscribed
webhook) and sends them. The Event row is the outbox: it commits or rolls back with the
caller's change, and a worker that never woke finds it again (``tasks.tick``).
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Sequence
from typing import Any

from django.db import DEFAULT_DB_ALIAS, router, transaction
from django.utils import timezone

from webhooks_app import actor, outbox, registry, sql, subscriptions, tasks
from webhooks_app.conf import app_settings
from webhooks_app.ids import new_event_id
from webhooks_app.models import (
    CLAIM_LOCK,
    Delivery,
    DeliveryStatus,
    Event,
    Lane,
    Trigger,
    Webhook,
)
from webhooks_app.serialization import dumps


class UnknownEvent(ValueError):
    """``emit()`` was given a name that is not in the event catalogue."""


_UNSET: Any = object()


def format_timestamp(moment: datetime.datetime) -> str:
    """ISO 8601 in UTC with millisecond precision and a ``Z``, as JavaScript's Date writes it."""
    text = moment.astimezone(datetime.UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


def emit(
    name: str,
    *,
    data: Any = None,
    model: str = "",
    object_id: Any = "",
    user: Any = _UNSET,
    using: str | None = None,
) -> Event | None:
    """Record an event for every active webhook subscribed to it, in the caller's transaction.

    ``name`` must be in the event catalogue (``WEBHOOKS["EVENTS"]`` for custom events).
    ``user`` defaults to the current actor (the request's user, or ``acting_as``). Nothing is
    written and ``None`` is returned when webhooks are disabled or nobody subscribed. Delivery
    starts after the transaction commits; a rollback sends nothing.
    """
    return record(name, data=data, model=model, object_id=object_id, user=user, using=using)


def record(
    name: str,
    *,
    data: Any = None,
    model: str = "",
    object_id: Any = "",
    user: Any = _UNSET,
    previous: Any = None,
    changed_fields: Sequence[str] | None = None,
    using: str | None = None,
    webhooks: Sequence[Webhook] | None = None,
    trigger: str = Trigger.AUTOMATIC,
    hold_for: float | None = None,
) -> Event | None:
    """``emit()`` with the arguments the package itself needs.

    Signal handlers pass ``previous`` and ``changed_fields``. Test sends pass ``webhooks``
    (the deliveries are created at once instead of by a worker) with ``trigger`` and
    ``hold_for``: the rows are then leased to the caller for that many seconds, who attempts
    them itself (``delivery.attempt_now``), and no worker is woken.
    """
    if not app_settings.ENABLED:
        return None
    if name not in registry.event_catalogue():
        raise UnknownEvent(
            f"{name!r} is not a known event name; declare custom events in WEBHOOKS['EVENTS']"
        )
    using = using or router.db_for_write(Event) or DEFAULT_DB_ALIAS
    if webhooks is None and not subscriptions.anyone_subscribed(name, model, using=using):
        return None
    if webhooks is not None and not webhooks:
        return None

    now = timezone.now()
    event_id = new_event_id()
    envelope = {
        "id": event_id,
        "event": name,
        "model": model or None,
        "timestamp": format_timestamp(now),
        # dumps() encodes what JSON lacks (Decimal, datetime, ...) as it writes.
        "data": data,
        "previous": previous,
        "changed_fields": list(changed_fields) if changed_fields is not None else None,
        "user": actor.user_data(actor.current_actor() if user is _UNSET else user),
    }
    # Every field given: a model's __init__ is twice as fast when no default is looked up.
    event = Event(
        id=event_id,
        name=name,
        model=model,
        object_id=str(object_id or ""),
        body=dumps(envelope),
        created_at=now,
        pending_fanout=webhooks is None,
    )

    if webhooks is None:
        # One statement in autocommit; in a transaction, one for all its events (outbox).
        outbox.add(event, using)
        tasks.wake_on_commit(using)
        return event
    with transaction.atomic(using=using):
        event.save(force_insert=True, using=using)
        create_deliveries(event, webhooks, trigger=trigger, using=using, hold_for=hold_for)
    return event


def create_deliveries(
    event: Event,
    webhooks: Sequence[Webhook],
    *,
    trigger: str = Trigger.AUTOMATIC,
    using: str = DEFAULT_DB_ALIAS,
    hold_for: float | None = None,
) -> list[Delivery]:
    """One pending Delivery of ``event`` per webhook that still exists, due at once (a
    worker is woken on commit), or leased to the caller for ``hold_for`` seconds."""
    now = timezone.now()
    held = hold_for is not None
    lease_token = uuid.uuid4().hex if held else ""
    due_at = now + datetime.timedelta(seconds=hold_for) if hold_for is not None else now
    with transaction.atomic(using=using):
        # Under the claim lock, as claims make their rows: a deletion of one of these
        # webhooks (models.py) then waits for this or this for it, and one it deleted
        # meanwhile gets no row (its row would fail this transaction on the foreign key).
        sql.lock(using, CLAIM_LOCK)
        present = set(
            Webhook.objects.using(using)
            .filter(pk__in=[webhook.pk for webhook in webhooks])
            .values_list("pk", flat=True)
        )
        deliveries = Delivery.objects.using(using).bulk_create(
            new_delivery(event, webhook, trigger=trigger, due_at=due_at, lease_token=lease_token)
            for webhook in webhooks
            if webhook.pk in present
        )
    if deliveries and not held:
        tasks.wake_on_commit(using)
    return deliveries


def new_delivery(
    event: Event,
    webhook: Webhook,
    *,
    trigger: str = Trigger.AUTOMATIC,
    due_at: datetime.datetime,
    lease_token: str = "",
) -> Delivery:
    """An unsaved pending Delivery of ``event`` to ``webhook``: the one place its initial
    state is decided (workers fanning out and ``create_deliveries`` both use it). For a
    disabled webhook it is skipped from the start, with the reason: kept, visible, and
    resent if the webhook is re-enabled with its skipped deliveries."""
    delivery = Delivery(
        event_id=event.id,
        webhook_id=webhook.pk,
        event_name=event.name,
        event_model=event.model,
        status=DeliveryStatus.PENDING,
        max_attempts=1 if trigger == Trigger.TEST else 1 + webhook.effective_retries,
        next_attempt_at=due_at,
        next_trigger=trigger,
        # An operator's resend competes with retries, not with new events.
        lane=Lane.FIRST if trigger == Trigger.AUTOMATIC else Lane.RETRY,
        lease_token=lease_token,
        created_at=timezone.now(),
    )
    if not webhook.is_active and trigger == Trigger.AUTOMATIC:
        reason = webhook.disabled_reason or "The webhook is disabled."
        delivery.status = DeliveryStatus.SKIPPED
        delivery.last_error = f"Skipped: {reason}"[:500]
        delivery.next_attempt_at = None
        delivery.lease_token = ""
        delivery.completed_at = delivery.created_at
    return delivery
