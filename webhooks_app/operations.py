"""What operators and integrators do to webhooks and deliveries, in one place.

The REST API, the admin and the management commands all call these functions, so a retry
from the admin and a retry through the API are the same retry.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import QuerySet, TextField, Value
from django.db.models.functions import Cast
from django.utils import timezone

from webhooks_app import delivery, encryption, events, signing, subscriptions, tasks
from webhooks_app.models import (
    SETTINGS_REASONS,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Event,
    Lane,
    Trigger,
    Webhook,
)
from webhooks_app.notifications import ways_to_reenable
from webhooks_app.registry import TEST_EVENT

MAX_ROTATION_GRACE = datetime.timedelta(days=7)
DEFAULT_ROTATION_GRACE = datetime.timedelta(hours=24)


class OperationError(ValueError):
    """A request that cannot be carried out; the message says why, for the user."""


def send_test(
    webhook: Webhook,
    *,
    event_name: str = TEST_EVENT,
    data: Any = None,
    model: str = "",
    user: Any = None,
) -> DeliveryAttempt:
    """Send one event to this webhook now, in this thread, and return the attempt.

    The event and delivery are recorded like any other (trigger ``test``, one attempt), so the
    test shows up in the delivery log. Works for disabled webhooks too: testing an endpoint
    is how one finds out whether to enable it again.
    """
    payload = {"message": "Test event from django-webhooks."} if data is None else data
    event = events.record(
        event_name,
        data=payload,
        model=model,
        user=user,
        webhooks=[webhook],
        trigger=Trigger.TEST,
        # Held for as long as this send can take, so no worker sends it too.
        hold_for=3 * webhook.effective_timeout + 5,
    )
    if event is None:
        raise OperationError("Webhooks are disabled (WEBHOOKS['ENABLED'] is False).")
    row = event.deliveries.first()
    if row is None:
        raise OperationError("The webhook was deleted.")
    # A disabled webhook's delivery would be skipped; a test is attempted regardless.
    row.event = event
    return delivery.attempt_now(row, webhook)


def reenable_hint(webhook: Webhook, attempt: DeliveryAttempt) -> str:
    """What a successful test of a disabled webhook should tell the person who ran it."""
    if webhook.is_active or attempt.outcome != DeliveryAttempt.Outcome.SUCCEEDED:
        return ""
    return (
        "The endpoint works, but this webhook is disabled"
        + (f" ({webhook.disabled_reason})" if webhook.disabled_reason else "")
        + f": re-enable it (and resend what was skipped) with {ways_to_reenable(webhook)}."
    )


def retry_deliveries(deliveries: QuerySet[Delivery] | Iterable[Delivery]) -> int:
    """Attempt these deliveries again, now; returns how many were queued.

    A settled delivery (failed, succeeded, skipped) gets exactly one more attempt (trigger
    ``manual``): if it fails again it is failed again, as GitHub's "Redeliver" does. A pending
    delivery waiting for its next automatic retry is attempted now and keeps its remaining
    retries. A delivery a worker holds right now is left alone.
    """
    if isinstance(deliveries, QuerySet):
        queryset = deliveries
    else:
        queryset = Delivery.objects.filter(pk__in=[d.pk for d in deliveries])
    now = timezone.now()
    with transaction.atomic():
        held = Delivery.objects.leased(now).values("pk")
        rows = queryset.exclude(pk__in=held).values_list("pk", "status", "attempts", "max_attempts")
        by_new_max: dict[int, list[int]] = {}
        for pk, status, attempts, max_attempts in rows:
            # A pending row keeps its retries, and so does one skipped before any attempt
            # (a disabled webhook's): it has had none of its schedule yet.
            never_tried = status == DeliveryStatus.SKIPPED and attempts == 0
            keeps_schedule = status == DeliveryStatus.PENDING or never_tried
            new_max = max(max_attempts, 1) if keeps_schedule else attempts + 1
            by_new_max.setdefault(new_max, []).append(pk)
        queued = 0
        for new_max, pks in by_new_max.items():
            queued += (
                Delivery.objects.filter(pk__in=pks)
                .exclude(pk__in=Delivery.objects.leased(now).values("pk"))
                .update(
                    status=DeliveryStatus.PENDING,
                    max_attempts=new_max,
                    next_attempt_at=now,
                    next_trigger=Trigger.MANUAL,
                    lane=Lane.RETRY,
                    lease_token="",
                    completed_at=None,
                )
            )
        if queued:
            tasks.wake_on_commit()
    return queued


def recover(
    webhook: Webhook, since: datetime.datetime, until: datetime.datetime | None = None
) -> int:
    """Re-send every failed delivery of ``webhook`` created in ``[since, until)``."""
    if until is not None and until <= since:
        raise OperationError("'until' must be later than 'since'.")
    failed = Delivery.objects.filter(
        webhook=webhook, status=DeliveryStatus.FAILED, created_at__gte=since
    )
    if until is not None:
        failed = failed.filter(created_at__lt=until)
    return retry_deliveries(failed)


def redeliver_event(event: Event) -> int:
    """Send an event again to every active webhook subscribed to it now; returns how many."""
    with transaction.atomic():
        targets = subscriptions.subscribed_webhooks(event.name, event.model, using="default")
        created = events.create_deliveries(event, targets, trigger=Trigger.MANUAL)
    return len(created)


def rotate_secret(webhook: Webhook, *, grace: datetime.timedelta = DEFAULT_ROTATION_GRACE) -> str:
    """Give the webhook a new secret; the old one keeps signing alongside it for ``grace``.

    Returns the new secret (shown once). Rotating again during a grace period drops the
    oldest secret: at most two sign at a time.
    """
    if grace < datetime.timedelta(0) or grace > MAX_ROTATION_GRACE:
        raise OperationError("The grace period must be between 0 and 7 days.")
    if webhook.managed_by_settings:
        raise OperationError("This webhook's secret is set in settings.WEBHOOKS['ENDPOINTS'].")
    new_secret = signing.generate_secret()
    webhook.previous_secret = webhook.secret
    webhook.previous_secret_expires_at = timezone.now() + grace
    webhook.secret = new_secret
    webhook.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at"])
    return new_secret


def reencrypt_secrets() -> tuple[int, list[int]]:
    """Encrypt every stored secret with the first configured key (after a key was added in
    front of ``WEBHOOKS["SECRET_KEYS"]``); returns how many webhooks were rewritten and the
    ids of those no configured key decrypts (left as they are)."""
    # Read and written as stored text: the model field would decrypt (and fail on exactly
    # the rows this must report) and encrypt anew.
    stored = Cast("secret", output_field=TextField())
    previous = Cast("previous_secret", output_field=TextField())
    rewritten, unreadable = 0, []
    for pk, secret, previous_secret in Webhook.objects.values_list("pk", stored, previous):
        try:
            values = [
                encryption.reencrypt(secret or ""),
                encryption.reencrypt(previous_secret or ""),
            ]
        except encryption.SecretUnreadable:
            unreadable.append(pk)
            continue
        # Only if the row still holds what was read: a rotation in between must not be
        # overwritten with the secret it replaced (it is re-encrypted on the next run).
        unchanged = Webhook.objects.annotate(stored=stored, stored_previous=previous).filter(
            pk=pk, stored=secret or "", stored_previous=previous_secret or ""
        )
        rewritten += unchanged.update(
            secret=Value(values[0], output_field=TextField()),
            previous_secret=Value(values[1], output_field=TextField()),
        )
    return rewritten, unreadable


def enable(webhook: Webhook, *, resend_skipped: bool = False) -> int:
    """Start sending to the webhook again, with a clean failure count. With
    ``resend_skipped``, the deliveries skipped since it was disabled are sent again (each
    gets one attempt, like any resend); returns how many."""
    disabled_at = webhook.disabled_at
    if webhook.managed_by_settings and webhook.disabled_reason in SETTINGS_REASONS:
        raise OperationError(
            "This webhook is declared inactive in (or removed from) "
            "settings.WEBHOOKS['ENDPOINTS']; enable it there."
        )
    with transaction.atomic():
        webhook.is_active = True
        webhook.disabled_reason = ""
        webhook.disabled_at = None
        webhook.consecutive_failures = 0
        webhook.failing_since = None
        webhook.disable_warned_at = None
        webhook.save(
            update_fields=[
                "is_active",
                "disabled_reason",
                "disabled_at",
                "consecutive_failures",
                "failing_since",
                "disable_warned_at",
                "updated_at",
            ]
        )
        if not resend_skipped:
            return 0
        return retry_deliveries(skipped_while_disabled(webhook, disabled_at))


def skipped_while_disabled(
    webhook: Webhook, disabled_at: datetime.datetime | None
) -> QuerySet[Delivery]:
    """The deliveries of ``webhook`` skipped since ``disabled_at`` (what re-enabling resends)."""
    skipped = Delivery.objects.filter(webhook=webhook, status=DeliveryStatus.SKIPPED)
    if disabled_at is None:
        return skipped.none()
    # Skipped when created (the webhook was already disabled) or when it came due.
    return skipped.filter(completed_at__gte=disabled_at)


def disable(webhook: Webhook, reason: str = "Disabled by an operator.") -> None:
    """Stop sending to the webhook; its pending deliveries are skipped when they come due."""
    webhook.is_active = False
    webhook.disabled_reason = reason[:500]
    webhook.disabled_at = timezone.now()
    webhook.save(update_fields=["is_active", "disabled_reason", "disabled_at"])
