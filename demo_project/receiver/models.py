"""What the demo receiver saw, and its "fail on purpose" switch."""

from __future__ import annotations

import json
from datetime import timedelta

from django.db import models
from django.utils import timezone


class Slot(models.TextChoices):
    STANDARD = "standard", "Standard Webhooks"
    SCALAR = "scalar", "Scalar style"


class ReceivedWebhook(models.Model):
    slot = models.CharField(max_length=20, choices=Slot.choices)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    headers = models.JSONField(default=dict)
    body = models.TextField(blank=True)
    event_id = models.CharField(max_length=100, blank=True)
    event = models.CharField(max_length=100, blank=True)
    model = models.CharField(max_length=100, blank=True)
    verified = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField(default=200)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        mark = "verified" if self.verified else "rejected"
        return f"{self.slot}: {self.event or '?'} {self.model} ({mark})"

    @property
    def pretty_body(self) -> str:
        try:
            return json.dumps(json.loads(self.body), indent=2, sort_keys=False)
        except ValueError:
            return self.body

    @property
    def pretty_headers(self) -> str:
        return json.dumps(self.headers, indent=2, sort_keys=True)


class ReceiverSwitch(models.Model):
    """One row: while ``fail_until`` is in the future the receiver answers 500.

    Kept in the database rather than in memory because the button is pressed in one request
    and read by others, possibly in another thread of the server.
    """

    fail_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"failing until {self.fail_until}" if self.is_failing() else "answering normally"

    @classmethod
    def get(cls) -> ReceiverSwitch:
        switch, _ = cls.objects.get_or_create(pk=1)
        return switch

    def is_failing(self) -> bool:
        return self.fail_until is not None and self.fail_until > timezone.now()

    def fail_for(self, seconds: int) -> None:
        self.fail_until = timezone.now() + timedelta(seconds=seconds)
        self.save(update_fields=["fail_until"])

    def recover(self) -> None:
        self.fail_until = None
        self.save(update_fields=["fail_until"])
