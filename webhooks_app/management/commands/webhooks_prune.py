"""Delete old deliveries, their attempts, and events nothing refers to any more."""

from __future__ import annotations

import datetime
from argparse import ArgumentParser
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from webhooks_app import holds
from webhooks_app.management.cli import (
    Progress,
    UsageError,
    WebhooksCommand,
    counted,
    parse_duration,
)
from webhooks_app.models import Delivery, DeliveryAttempt, DeliveryStatus, Event


class Command(WebhooksCommand):
    help = """Delete settled deliveries (and their attempts) older than an age, then events
left with no delivery. Pending deliveries are never deleted.

  manage.py webhooks_prune                              # succeeded > 30d, failed > 90d
  manage.py webhooks_prune --succeeded-age 7d --failed-age 30d --dry-run

Deletes in batches (--batch-size rows per transaction), so it can run on a live site.
To run it every night with django-q2:

  from django_q.models import Schedule
  Schedule.objects.update_or_create(
      name="webhooks_prune",
      defaults={"func": "django.core.management.call_command",
                "args": "'webhooks_prune'", "schedule_type": Schedule.DAILY})

Exit status: 0 when done, 2 for bad arguments."""

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--succeeded-age",
            default="30d",
            help="delete succeeded (and skipped) deliveries older than this (default 30d)",
        )
        parser.add_argument(
            "--failed-age",
            default="90d",
            help="delete failed deliveries older than this (default 90d)",
        )
        parser.add_argument("--batch-size", type=int, default=1000, help="rows per transaction")
        parser.add_argument("--dry-run", action="store_true", help="only count")

    def handle(self, *args: Any, **options: Any) -> None:
        succeeded_age = parse_duration(options["succeeded_age"])
        failed_age = parse_duration(options["failed_age"])
        if min(succeeded_age, failed_age) < datetime.timedelta(hours=1):
            raise UsageError("ages below 1h would delete deliveries still being looked at")
        if options["batch_size"] < 1:
            raise UsageError("--batch-size must be at least 1")
        now = timezone.now()
        # By completion time: a delivery retried for days is as old as its last attempt.
        old = Delivery.objects.filter(
            status__in=[DeliveryStatus.SUCCEEDED, DeliveryStatus.SKIPPED],
            completed_at__lt=now - succeeded_age,
        ) | Delivery.objects.filter(status=DeliveryStatus.FAILED, completed_at__lt=now - failed_age)
        ids = list(old.values_list("pk", flat=True))
        oldest_kept = now - min(succeeded_age, failed_age)
        if options["dry_run"]:
            deliveries = counted(len(ids), "delivery", "deliveries")
            self.stdout.write(f"Would delete {deliveries} with their attempts (dry run).")
            return
        size = options["batch_size"]
        attempts = 0
        progress = Progress(len(ids), self.stdout, "Deleting deliveries")
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            with transaction.atomic():
                # No signal receivers on these models, so Django deletes the attempts with
                # one DELETE ... WHERE delivery_id IN (...) rather than row by row.
                # The age and status conditions again: a row re-queued since it was listed
                # (a recover, a retry) is no longer old and must not be deleted.
                _, per_model = old.filter(pk__in=chunk).delete()
            attempts += per_model.get(DeliveryAttempt._meta.label, 0)
            progress.update(start + len(chunk))
        events = self._prune_events(oldest_kept, size)
        self.stdout.write(
            self.style.SUCCESS(
                f"Deleted {counted(len(ids), 'delivery', 'deliveries')}, "
                f"{counted(attempts, 'attempt', 'attempts')} and "
                f"{counted(events, 'event', 'events')}."
            )
        )

    def _prune_events(self, before: datetime.datetime, size: int) -> int:
        """Events older than the youngest age with no delivery left. An event still waiting
        for a worker to create its deliveries (pending fan-out) is the outbox itself: kept."""
        # Nor one a held webhook is still owed: its delivery is yet to be made.
        orphans = holds.not_owed(
            Event.objects.filter(created_at__lt=before, pending_fanout=False).exclude(
                Exists(Delivery.objects.filter(event=OuterRef("pk")))
            )
        )
        deleted = 0
        while True:
            chunk = list(orphans.values_list("pk", flat=True)[:size])
            if not chunk:
                return deleted
            deleted += orphans.filter(pk__in=chunk).delete()[0]
