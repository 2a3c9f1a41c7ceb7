"""``emit()``: the one way an Event is created, with the envelope every subscriber receives."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Sequence
from typing import Any

from django.db import DEFAULT_DB_ALIAS, router, transaction
from django.utils import timezone

from webhooks_app import actor, registry, subscriptions, sync, tasks
from webhooks_app.conf import app_settings
from webhooks_app.models import Delivery, DeliveryStatus, Event, Trigger, Webhook
from webhooks_app.serialization import dumps, encode_value


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
    previous: Any = None,
    changed_fields: Sequence[str] | None = None,
    webhooks: Sequence[Webhook] | None = None,
    trigger: str = Trigger.AUTOMATIC,
    using: str | None = None,
    queue: bool = True,
) -> Event | None:
    """Record an event and what must be delivered, in the caller's transaction.

    ``name`` must be in the event catalogue (``WEBHOOKS["EVENTS"]`` for custom events).
    ``user`` defaults to the current actor (the request's user, or ``acting_as``). The event
    goes to every active webhook subscribed to it, or only to ``webhooks`` when given (test
    sends). Nothing is written and ``None`` is returned when webhooks are disabled or nobody
    subscribed. Delivery starts after the transaction commits; a rollback sends nothing.
    ``queue=False`` leaves the attempt to the caller (see ``create_deliveries``).
    """
    if not app_settings.ENABLED:
        return None
    if name not in registry.event_catalogue():
        raise UnknownEvent(
            f"{name!r} is not a known event name; declare custom events in WEBHOOKS['EVENTS']"
        )
    using = using or router.db_for_write(Event) or DEFAULT_DB_ALIAS
    if webhooks is None:
        sync.ensure_synced(using=using)
        targets = subscriptions.subscribed_webhooks(name, model, using=using)
    else:
        targets = list(webhooks)
    if not targets:
        return None

    now = timezone.now()
    event = Event(name=name, model=model, object_id=str(object_id or ""), created_at=now)
    envelope = {
        "id": event.id,
        "event": name,
        "model": model or None,
        "timestamp": format_timestamp(now),
        "data": encode_value(data),
        "previous": encode_value(previous),
        "changed_fields": list(changed_fields) if changed_fields is not None else None,
        "user": encode_value(actor.user_data(actor.current_actor() if user is _UNSET else user)),
    }
    event.body = dumps(envelope)

    with transaction.atomic(using=using):
        event.save(force_insert=True, using=using)
        create_deliveries(event, targets, trigger=trigger, using=using, queue=queue)
    return event


def create_deliveries(
    event: Event,
    webhooks: Sequence[Webhook],
    *,
    trigger: str = Trigger.AUTOMATIC,
    using: str = DEFAULT_DB_ALIAS,
    queue: bool = True,
) -> list[Delivery]:
    """One pending Delivery of ``event`` per webhook, handed to the workers on commit.

    The new rows are leased to this transaction's batch; if its queue message never reaches a
    worker, the lease runs out and the dispatcher picks the rows up. With ``queue=False`` the
    caller attempts them itself (``delivery.deliver(ids, lease_token)``), as a test send does.
    """
    now = timezone.now()
    batch = tasks.batch_for_transaction(using) if queue else None
    lease_token = batch.lease_token if batch else uuid.uuid4().hex
    lease_until = now + datetime.timedelta(seconds=float(app_settings.LEASE_SECONDS))
    deliveries = Delivery.objects.using(using).bulk_create(
        Delivery(
            event=event,
            webhook=webhook,
            event_name=event.name,
            event_model=event.model,
            status=DeliveryStatus.PENDING,
            max_attempts=1 if trigger == Trigger.TEST else 1 + webhook.effective_retries,
            next_attempt_at=lease_until,
            next_trigger=trigger,
            lease_token=lease_token,
            created_at=now,
        )
        for webhook in webhooks
    )
    if batch:
        batch.add([delivery.pk for delivery in deliveries])
    return deliveries
