"""Webhook endpoints, the events they receive, and the log of every delivery attempt.

The Delivery row is the source of truth for delivery: its status, attempt count, when it is due
next and who holds it right now (``lease_token``). Queue messages only say
"look at these rows"; a message that is lost is found again from these columns.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django import forms
from django.conf import settings
from django.db import models, router, transaction
from django.db.models import Q
from django.utils import timezone

from webhooks_app import encryption, signing
from webhooks_app.conf import app_settings
from webhooks_app.ids import new_event_id


class HttpMethod(models.TextChoices):
    POST = "POST", "POST"
    PUT = "PUT", "PUT"
    PATCH = "PATCH", "PATCH"


if TYPE_CHECKING:
    _URLFieldBase = models.URLField[str, str]
else:  # generic only in the stubs
    _URLFieldBase = models.URLField


class _EndpointURLFormField(forms.URLField):
    # rules.py judges the URL (Webhook.clean), with the message the API and the checks give;
    # Django's own "Enter a valid URL." beside it would be a second, vaguer verdict.
    default_validators: list[Any] = []


class EndpointURLField(_URLFieldBase):
    """A URL field judged by rules.py only; its form assumes https for a bare host, as
    Django 6 does by default."""

    default_validators: list[Any] = []

    def formfield(self, **kwargs: Any) -> Any:
        return super().formfield(
            **{"form_class": _EndpointURLFormField, "assume_scheme": "https", **kwargs}
        )


class EncryptedSecretField(models.TextField):  # type: ignore[type-arg]
    """A secret, encrypted in the database (encryption.py) and clear text in Python. Tokens
    differ on every save, so a secret cannot be looked up by value (nothing does)."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        return None if value is None else encryption.read(value)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        return encryption.encrypt(value) if value else value


# Why sync.py deactivates a webhook declared in settings: only the settings can undo these.
DECLARED_INACTIVE_REASON = "Declared inactive in settings."
REMOVED_FROM_SETTINGS_REASON = "Removed from settings.WEBHOOKS['ENDPOINTS']."
SETTINGS_REASONS = (DECLARED_INACTIVE_REASON, REMOVED_FROM_SETTINGS_REASON)
# The Lease row every claim locks (claims.py): one claim at a time makes and takes rows.
CLAIM_LOCK = "webhooks_app.claim"


def _delete_with_no_worker_writing(
    using: str, webhooks: models.QuerySet[Webhook, Any], delete: Any
) -> tuple[int, dict[str, int]]:
    """Run a deletion of ``webhooks`` once no worker is writing rows of theirs.

    Django collects a webhook's deliveries and their attempts first and deletes the webhook
    last, and the foreign keys are checked at commit: a row of theirs committed in between
    would fail the deletion (or the worker's transaction, whichever commits second). Rows
    are made by claims (a new event's; a held webhook's owed ones; a disabled one's skipped
    ones, which sweeps make 500 at a time) and attempts by the outcome of a leased row. So
    first the claim lock: the claim in progress commits, and the next ones wait until the
    deletion has committed. Then the webhooks' leased rows: an outcome being written
    commits first and is collected; one written later finds its row gone and records no
    attempt for it (``delivery.Recorder.write``)."""
    with transaction.atomic(using=using):
        Lease.objects.using(using).lock(CLAIM_LOCK)
        leased = Delivery.objects.using(using).filter(webhook__in=webhooks, lease_token__gt="")
        # In primary-key order, as outcome writes lock them (sql.write_outcomes).
        list(leased.order_by("pk").select_for_update().values_list("pk", flat=True))
        result: tuple[int, dict[str, int]] = delete()
        return result


class WebhookQuerySet(models.QuerySet["Webhook"]):
    def active(self) -> WebhookQuerySet:
        return self.filter(is_active=True)

    def receiving(self) -> WebhookQuerySet:
        """The webhooks an event makes deliveries for: the active ones, and the disabled
        ones (a 410, the failure policy, an operator), whose deliveries are kept as skipped,
        to resend on re-enabling. An endpoint declared inactive in, or removed from,
        settings gets none."""
        deactivated_by_settings = Q(managed_by_settings=True, disabled_reason__in=SETTINGS_REASONS)
        return self.filter(Q(is_active=True) | ~deactivated_by_settings)

    def delete(self) -> tuple[int, dict[str, int]]:
        # The database Django deletes on (self.db would be the router's read database).
        hints = self._hints  # type: ignore[attr-defined]  # Django's own, not in the stubs
        using = self._db or router.db_for_write(self.model, **hints)  # type: ignore[attr-defined]
        return _delete_with_no_worker_writing(using, self.values("pk"), super().delete)

    # As QuerySet.delete: not on the manager (Webhook.objects.delete() would delete every
    # webhook), and never called by a template.
    delete.queryset_only = True  # type: ignore[attr-defined]
    delete.alters_data = True  # type: ignore[attr-defined]


class Webhook(models.Model):
    """An endpoint that receives the events it subscribed to."""

    name = models.CharField(max_length=200, blank=True)
    url = EndpointURLField(max_length=2000)
    secret = EncryptedSecretField(default=signing.generate_secret)
    # During a rotation the previous secret keeps signing alongside the new one until it expires.
    previous_secret = EncryptedSecretField(blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    events = models.JSONField(
        default=list, blank=True, help_text="Event names or wildcards (user.*, *); empty = all."
    )
    headers = models.JSONField(default=dict, blank=True)
    method = models.CharField(max_length=8, choices=HttpMethod.choices, default=HttpMethod.POST)
    # null = the site-wide default from settings.WEBHOOKS, so changing the default applies to
    # every webhook that did not choose its own value.
    timeout = models.FloatField(null=True, blank=True, help_text="Seconds; empty = default.")
    retries = models.PositiveSmallIntegerField(null=True, blank=True)
    max_in_flight = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Requests in flight to this endpoint at once, across all workers; "
        "empty = the default.",
    )
    rate_limit = models.FloatField(
        null=True,
        blank=True,
        help_text="Requests per second across all workers; empty = no limit.",
    )
    signature_header = models.CharField(max_length=100, blank=True)
    # null means "use SIGNATURE_PREFIX"; "" is a real choice (no prefix), so the two must differ.
    signature_prefix = models.CharField(max_length=32, null=True, blank=True)  # noqa: DJ001
    is_active = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=500, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="webhooks",
    )
    managed_by_settings = models.BooleanField(default=False, editable=False)
    settings_key = models.CharField(max_length=2000, blank=True, editable=False)
    settings_declaration = models.JSONField(default=dict, blank=True, editable=False)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    # The failure policy (failures.py): when the current run of failed attempts began, and
    # when its owner was warned that the webhook will be disabled; both cleared by a success.
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    disable_warned_at = models.DateTimeField(null=True, blank=True, editable=False)
    disable_after_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Disable after failing continuously this long; empty = "
        "WEBHOOKS['DISABLE_AFTER_SECONDS'], 0 = never.",
    )
    disable_after_failures = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="...and at least this many failed attempts in a row; empty = "
        "WEBHOOKS['DISABLE_AFTER_FAILURES'].",
    )
    last_delivery_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_delivery_status = models.CharField(max_length=20, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    # Declared last: from here on, "models" in this class body is this field, not the module.
    models = models.JSONField(
        default=list, blank=True, help_text="Payload model names; empty = all."
    )

    objects = WebhookQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        # Resending is a separate right from looking: a read-only operator can inspect
        # deliveries without being able to send anything.
        permissions = [
            ("test_webhook", "Can send test events to webhooks"),
            ("recover_webhook", "Can recover failed deliveries of webhooks"),
            ("rotate_webhook_secret", "Can rotate webhook secrets"),
        ]
        indexes = [
            models.Index(fields=["is_active"], name="webhooks_active_idx"),
            models.Index(fields=["owner", "-created_at"], name="webhooks_owner_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["settings_key"],
                condition=Q(managed_by_settings=True),
                name="webhooks_unique_settings_key",
            )
        ]

    def __str__(self) -> str:
        return self.name or self.url

    def delete(self, using: Any = None, keep_parents: bool = False) -> tuple[int, dict[str, int]]:
        using = using or router.db_for_write(type(self), instance=self)
        return _delete_with_no_worker_writing(
            using,
            Webhook.objects.using(using).filter(pk=self.pk).values("pk"),
            lambda: super(Webhook, self).delete(using=using, keep_parents=keep_parents),
        )

    delete.alters_data = True  # type: ignore[attr-defined]

    # The fields rules.py judges; the admin form, the API and the settings checks use the
    # same rules, so a webhook is refused for the same reasons whichever way it is made.
    RULED_FIELDS = (
        "url",
        "events",
        "models",
        "headers",
        "method",
        "timeout",
        "retries",
        "max_in_flight",
        "rate_limit",
        "disable_after_seconds",
        "disable_after_failures",
        "signature_header",
        "signature_prefix",
        "secret",
    )

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from webhooks_app import rules

        found = rules.problems({name: getattr(self, name) for name in self.RULED_FIELDS})
        if found:
            raise ValidationError(rules.by_field(found))

    @property
    def effective_timeout(self) -> float:
        return float(self.timeout if self.timeout is not None else app_settings.TIMEOUT)

    @property
    def effective_retries(self) -> int:
        return int(self.retries if self.retries is not None else app_settings.RETRIES)

    @property
    def effective_disable_after_seconds(self) -> float | None:
        """How long a failing run lasts before the webhook is disabled; None = never."""
        value = self.disable_after_seconds
        if value is None:
            value = app_settings.DISABLE_AFTER_SECONDS
        return float(value) if value else None

    @property
    def effective_disable_after_failures(self) -> int:
        value = self.disable_after_failures
        if value is None:
            value = app_settings.DISABLE_AFTER_FAILURES
        return int(value)

    @property
    def effective_max_in_flight(self) -> int:
        value = self.max_in_flight or app_settings.ENDPOINT_MAX_IN_FLIGHT
        return max(1, int(value))

    @property
    def effective_signature_header(self) -> str:
        return str(self.signature_header or app_settings.SIGNATURE_HEADER)

    @property
    def effective_signature_prefix(self) -> str:
        if self.signature_prefix is not None:
            return self.signature_prefix
        return str(app_settings.SIGNATURE_PREFIX)

    def signing_secrets(self, now: datetime | None = None) -> list[str]:
        """The secrets that sign a request now: the current one, then one being rotated out."""
        now = now or timezone.now()
        secrets = [self.secret]
        expires = self.previous_secret_expires_at
        if self.previous_secret and expires is not None and expires > now:
            secrets.append(self.previous_secret)
        if any(isinstance(secret, encryption.UnreadableSecret) for secret in secrets):
            raise encryption.SecretUnreadable(
                f"the secret of webhook {self.pk} cannot be decrypted: add the key it was "
                "encrypted with to WEBHOOKS['SECRET_KEYS'] (see webhooks_reencrypt)"
            )
        return secrets


class EventQuerySet(models.QuerySet["Event"]):
    def pending_fanout(self) -> EventQuerySet:
        """Events whose deliveries no worker has created yet, oldest first."""
        return self.filter(pending_fanout=True).order_by("created_at")


class Event(models.Model):
    """Something that happened, with the exact JSON body every subscriber receives."""

    id = models.CharField(primary_key=True, max_length=40, default=new_event_id, editable=False)
    name = models.CharField(max_length=200)
    model = models.CharField(max_length=200, blank=True)
    object_id = models.CharField(max_length=255, blank=True)
    # The bytes we sign and send, stored once so every retry sends the same bytes.
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    # True from emit() until a worker has created the event's deliveries ("fanned it out"):
    # the writer's transaction stores one row, the workers do the rest.
    pending_fanout = models.BooleanField(default=False, editable=False)
    # Which fan-out created its deliveries, numbered in the order fan-outs ran (under the
    # claim lock, so commit order cannot reorder them): a webhook held back from batch N on
    # (HeldFanout) is owed the events of batches N and later. NULL until fanned out, and for
    # events sent to chosen webhooks only (tests, resends), which never owe anyone.
    fanout_batch = models.BigIntegerField(null=True, blank=True, editable=False)

    objects = EventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["created_at"],
                condition=Q(pending_fanout=True),
                name="webhooks_event_fanout_idx",
            ),
            models.Index(fields=["-created_at"], name="webhooks_event_created_idx"),
            models.Index(fields=["name", "-created_at"], name="webhooks_event_name_idx"),
            models.Index(fields=["model", "object_id"], name="webhooks_event_object_idx"),
            models.Index(fields=["object_id"], name="webhooks_event_objectid_idx"),
            # Partial: the writer's insert (NULL) does not enter it.
            models.Index(
                fields=["fanout_batch"],
                condition=Q(fanout_batch__isnull=False),
                name="webhooks_event_batch_idx",
            ),
        ]

    def __str__(self) -> str:
        subject = f" {self.model}:{self.object_id}" if self.model else ""
        return f"{self.name}{subject} ({self.id})"

    @property
    def payload(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


class Trigger(models.TextChoices):
    AUTOMATIC = "automatic", "Automatic"
    MANUAL = "manual", "Manual"
    TEST = "test", "Test"


class Lane(models.TextChoices):
    """Capacity pools: retries and recovery never take all of a worker's or an endpoint's
    slots, so new events keep flowing while a backlog of failures is worked off."""

    FIRST = "first", "First attempt"
    RETRY = "retry", "Retry or resend"


def is_retrying(status: str, attempts: int) -> bool:
    """A pending delivery that failed before and waits for its next attempt (the admin's
    Retrying badge and the metrics' "retrying")."""
    return status == DeliveryStatus.PENDING and attempts > 0


class DeliveryQuerySet(models.QuerySet["Delivery"]):
    """The lease verbs, in one place: every claim and every release goes through these."""

    def due(self, now: datetime) -> DeliveryQuerySet:
        """Pending rows whose time has come, or whose holder's lease ran out."""
        return self.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)

    def due_in_lane(self, lane: str, now: datetime) -> DeliveryQuerySet:
        """Due rows of one lane, oldest first."""
        return self.filter(
            status=DeliveryStatus.PENDING, lane=lane, next_attempt_at__lte=now
        ).order_by("next_attempt_at")

    def leased(self, now: datetime) -> DeliveryQuerySet:
        """Rows someone holds right now: being sent, or about to be. (Only pending rows
        carry a token; leaving status out lets the leased rows' partial index answer.)"""
        return self.filter(lease_token__gt="", next_attempt_at__gt=now)

    def held_by(self, token: str) -> DeliveryQuerySet:
        return self.filter(status=DeliveryStatus.PENDING, lease_token=token)

    def lease_to(self, token: str, until: datetime) -> int:
        """Give these rows to ``token`` until ``until``; returns how many it got.

        Callers narrow the queryset to what they may take (``due(...)``, ``held_by(...)``),
        so a row another holder took in the meantime is not in the UPDATE's WHERE."""
        return self.update(lease_token=token, next_attempt_at=until)

    def failed(self) -> DeliveryQuerySet:
        return self.filter(status=DeliveryStatus.FAILED)


# Pending rows in due order, and each webhook's queue of them: hand-written statements on
# SQLite name them (sql._indexed_by).
DUE_INDEX = "webhooks_delivery_due_idx"
QUEUE_INDEX = "webhooks_delivery_queue_idx"


class Delivery(models.Model):
    """One event on its way to one webhook."""

    # Indexed below as a plain btree: on PostgreSQL Django would add a second, LIKE-ready
    # index to a foreign key to a text primary key, which nothing here uses.
    event = models.ForeignKey(
        Event, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    # No index of its own: (webhook, -created_at) below serves every lookup by webhook, and
    # each index costs every write of a row that is written three times.
    webhook = models.ForeignKey(
        Webhook, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    status = models.CharField(
        max_length=20, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=1)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    next_trigger = models.CharField(
        max_length=20, choices=Trigger.choices, default=Trigger.AUTOMATIC
    )
    lane = models.CharField(max_length=8, choices=Lane.choices, default=Lane.FIRST)
    # While lease_token is set, whoever holds that token may attempt the row, and
    # next_attempt_at is when the lease runs out: a pending row is due (for a first attempt, a
    # retry, or because its holder vanished) exactly when next_attempt_at has passed, so one
    # index serves the dispatcher. Both are cleared when the row is at rest.
    lease_token = models.CharField(max_length=32, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    # Copied from the last attempt, so the webhook page's latency chart reads this table's
    # (webhook, created_at) index instead of joining attempts.
    last_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Copies of the event's name and model: the admin filters a million deliveries by them,
    # and an index on this table answers that in order; a JOIN to the events cannot.
    event_name = models.CharField(max_length=200, blank=True, editable=False)
    event_model = models.CharField(max_length=200, blank=True, editable=False)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "deliveries"
        permissions = [("retry_delivery", "Can retry deliveries")]
        ordering = ["-created_at", "-id"]
        indexes = [
            # Partial (pending rows only): a settled row leaves these indexes, so they stay
            # small and the write that settles a row does not add to them.
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name=DUE_INDEX,
            ),
            # Each webhook's queue of pending rows, per lane, in due order: a claim reads the
            # queues of endpoints with room, never a hanging endpoint's backlog.
            models.Index(
                fields=["webhook", "lane", "next_attempt_at"],
                condition=Q(status="pending"),
                name=QUEUE_INDEX,
            ),
            # Only leased rows (at most the workers' slots): requests in flight per endpoint.
            models.Index(
                fields=["webhook", "next_attempt_at"],
                condition=Q(lease_token__gt=""),
                name="webhooks_delivery_leased_idx",
            ),
            models.Index(fields=["webhook", "-created_at"], name="webhooks_delivery_hook_idx"),
            models.Index(fields=["status", "-created_at"], name="webhooks_delivery_status_idx"),
            models.Index(fields=["-created_at"], name="webhooks_delivery_created_idx"),
            # New rows have no status code yet: they stay out of this index until answered.
            models.Index(
                fields=["last_status_code"],
                condition=Q(last_status_code__isnull=False),
                name="webhooks_delivery_code_idx",
            ),
            models.Index(fields=["event"], name="webhooks_delivery_event_idx"),
            models.Index(fields=["event_name", "-created_at"], name="webhooks_delivery_evname_idx"),
            models.Index(
                fields=["event_model", "-created_at"], name="webhooks_delivery_evmodel_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} -> webhook {self.webhook_id} ({self.status})"


class DeliveryAttempt(models.Model):
    """One HTTP request and what came back, as an operator needs to see it."""

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded", "Succeeded"
        RETRYING = "retrying", "Will retry"
        FAILED = "failed", "Failed"
        DISABLED = "disabled", "Webhook disabled"

    # (delivery, number) below serves lookups by delivery.
    delivery = models.ForeignKey(
        Delivery, on_delete=models.CASCADE, related_name="attempts_log", db_index=False
    )
    # Copied from the delivery, so a webhook's attempts over time are one index range
    # (the webhook page's chart) instead of a join. Empty on attempts recorded before 0008.
    webhook = models.ForeignKey(
        "Webhook",
        on_delete=models.CASCADE,
        related_name="+",
        null=True,
        blank=True,
        db_index=False,
        editable=False,
    )
    number = models.PositiveIntegerField()
    trigger = models.CharField(max_length=20, choices=Trigger.choices)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    request_method = models.CharField(max_length=8)
    request_url = models.CharField(max_length=2000)
    request_headers = models.JSONField(default=dict)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_headers = models.JSONField(default=dict, blank=True)
    response_body = models.TextField(blank=True)
    error_class = models.CharField(max_length=200, blank=True)
    error_message = models.TextField(blank=True)
    # The cause in plain words (http.AttemptResult.summary), shown in lists and commands;
    # error_class and error_message keep the whole story.
    summary = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["delivery", "number"]
        indexes = [
            models.Index(fields=["delivery", "number"], name="webhooks_attempt_idx"),
            models.Index(fields=["-started_at"], name="webhooks_attempt_started_idx"),
            models.Index(fields=["webhook", "-started_at"], name="webhooks_attempt_webhook_idx"),
        ]

    def __str__(self) -> str:
        result = self.response_status or self.error_class or self.outcome
        return f"attempt {self.number} of delivery {self.delivery_id}: {result}"


class LeaseQuerySet(models.QuerySet["Lease"]):
    def acquire(self, name: str, owner: str, seconds: float) -> bool:
        """Take or renew the lease ``name`` for ``seconds``; False while someone else holds it."""
        now = timezone.now()
        expires_at = now + timedelta(seconds=seconds)
        taken = (
            self.filter(name=name)
            .filter(Q(expires_at__lt=now) | Q(owner=owner))
            .update(owner=owner, expires_at=expires_at)
        )
        if taken:
            return True
        _, created = self.get_or_create(
            name=name, defaults={"owner": owner, "expires_at": expires_at}
        )
        return created

    def release(self, name: str, owner: str) -> None:
        self.filter(name=name, owner=owner).update(expires_at=timezone.now())

    def is_held(self, name: str) -> bool:
        return self.filter(name=name, expires_at__gte=timezone.now()).exists()

    def lock(self, name: str) -> None:
        """Serialise this transaction with every other one that locks ``name``.

        An UPDATE takes the row lock on PostgreSQL and the write lock on SQLite (whatever its
        transaction mode), so it works the same on both; ``select_for_update`` is a no-op on
        SQLite. Call it first in an ``atomic()`` block.
        """
        if not self.filter(name=name).update(owner=""):
            self.get_or_create(name=name, defaults={"owner": "", "expires_at": timezone.now()})
            self.filter(name=name).update(owner="")


class Lease(models.Model):
    """A named lease held by one process at a time (the ticker), or a lock row (claims)."""

    name = models.CharField(primary_key=True, max_length=100)
    owner = models.CharField(max_length=64)
    expires_at = models.DateTimeField()

    objects = LeaseQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.name} held by {self.owner} until {self.expires_at:%Y-%m-%d %H:%M:%S}"

    @property
    def remaining(self) -> timedelta:
        return self.expires_at - timezone.now()


class RateLimitState(models.Model):
    """The next free send slot of a rate-limited webhook, shared by every worker and cluster.

    Claims are serialised (``Lease.objects.lock``), so each claim hands out the slots after
    the previous one's: requests to the endpoint are spaced ``1 / rate_limit`` seconds apart
    however many processes send.
    """

    webhook = models.OneToOneField(
        Webhook, primary_key=True, on_delete=models.CASCADE, related_name="rate_limit_state"
    )
    next_slot_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"webhook {self.webhook_id}: next slot {self.next_slot_at:%H:%M:%S.%f}"


class HeldFanout(models.Model):
    """A webhook whose new events wait as events, not as deliveries, while it works through
    a backlog (a hanging, slow or rate-limited endpoint): it is owed every event it
    subscribes to from fan-out batch ``from_batch`` on (``Event.fanout_batch``).

    Claims create its deliveries, oldest first, as its queue of pending deliveries runs
    short, and delete this row once it has caught up (claims.py). Until then each event
    costs it nothing: a delivery row enters nine indexes and two foreign-key checks, which
    on a machine at its limit was what a hanging endpoint took from the others
    (docs/benchmarks.md). Deleted with its webhook; the prune keeps the events it is owed.
    """

    webhook = models.OneToOneField(
        Webhook, primary_key=True, on_delete=models.CASCADE, related_name="held_fanout"
    )
    from_batch = models.BigIntegerField()
    # Set by the fan-out that finds the webhook no longer receiving (disabled, or deactivated
    # in settings): from this batch on, the fan-out makes its rows (skipped) or none again,
    # and the hold owes only the batches before.
    until_batch = models.BigIntegerField(null=True, blank=True)
    held_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"webhook {self.webhook_id}: held back from fan-out batch {self.from_batch}"


class DeliveryHealth(Delivery):
    """No table of its own: gives the admin's health page a place in the admin index."""

    class Meta:
        proxy = True
        verbose_name = "health overview"
        verbose_name_plural = "health overview"
