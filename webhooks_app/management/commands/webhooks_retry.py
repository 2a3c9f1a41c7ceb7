"""Re-send failed (or pending) deliveries chosen by webhook, event, status and time."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.db.models import Q

from webhooks_app import operations
from webhooks_app.management.cli import (
    Progress,
    UsageError,
    WebhooksCommand,
    counted,
    find_webhook,
    parse_when,
)
from webhooks_app.models import Delivery, DeliveryStatus

RETRYABLE = [DeliveryStatus.FAILED, DeliveryStatus.PENDING, DeliveryStatus.SKIPPED]


class Command(WebhooksCommand):
    help = """Give the selected deliveries another attempt now, through the workers.

  manage.py webhooks_retry --webhook Billing --since 2h
  manage.py webhooks_retry --since 2026-01-15T10:00 --until 2026-01-15T12:00 --dry-run
  manage.py webhooks_retry --event evt_01a2... --status failed --status pending
  manage.py webhooks_retry --event update --since 1d

A failed delivery gets exactly one more attempt (as the admin's "Retry now" and the API's
retry do); a pending one waiting for its next retry is attempted now; one a worker holds
right now is left alone. At least one of --webhook, --event, --since is required, so a
typo cannot resend everything. Exit status: 0 when done, 2 for bad arguments."""

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--webhook", action="append", default=[], help="webhook id or name (repeatable)"
        )
        parser.add_argument(
            "--event", action="append", default=[], help="event id (evt_...) or event name"
        )
        parser.add_argument(
            "--status",
            action="append",
            choices=RETRYABLE,
            help="status to select (repeatable; default failed)",
        )
        parser.add_argument("--since", help="created at or after (ISO time, or 2h, 7d ago)")
        parser.add_argument("--until", help="created before (ISO time, or 2h, 7d ago)")
        parser.add_argument("--batch-size", type=int, default=500, help="rows per batch")
        parser.add_argument(
            "--dry-run", action="store_true", help="only count and list what would be retried"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not (options["webhook"] or options["event"] or options["since"]):
            raise UsageError("choose deliveries with --webhook, --event or --since")
        if options["batch_size"] < 1:
            raise UsageError("--batch-size must be at least 1")
        queryset = Delivery.objects.filter(status__in=options["status"] or ["failed"])
        if options["webhook"]:
            queryset = queryset.filter(
                webhook__in=[find_webhook(ref).pk for ref in options["webhook"]]
            )
        if options["event"]:
            ids = [e for e in options["event"] if e.startswith("evt_")]
            names = [e for e in options["event"] if not e.startswith("evt_")]
            queryset = queryset.filter(Q(event_id__in=ids) | Q(event_name__in=names))
        since = parse_when(options["since"]) if options["since"] else None
        until = parse_when(options["until"]) if options["until"] else None
        if since and until and until <= since:
            raise UsageError("--until must be later than --since")
        if since:
            queryset = queryset.filter(created_at__gte=since)
        if until:
            queryset = queryset.filter(created_at__lt=until)

        ids = list(queryset.order_by("created_at", "pk").values_list("pk", flat=True))
        if options["dry_run"]:
            deliveries = counted(len(ids), "delivery", "deliveries")
            self.stdout.write(f"Would retry {deliveries} (dry run, nothing sent).")
            for row in Delivery.objects.filter(pk__in=ids[:20]).select_related("webhook"):
                cause = f"  ({row.last_error})" if row.last_error else ""
                self.stdout.write(
                    f"  {row.pk}  {row.event_id}  {row.event_name}  {row.status}  -> {row.webhook}"
                    f"{cause}"
                )
            if len(ids) > 20:
                self.stdout.write(f"  ... and {len(ids) - 20} more")
            return
        if not ids:
            self.stdout.write("Nothing to retry.")
            return
        progress = Progress(len(ids), self.stdout, "Retrying")
        queued = 0
        size = options["batch_size"]
        for start in range(0, len(ids), size):
            # The selection is applied again per chunk: a row that changed since it was
            # listed (succeeded meanwhile, say) is not re-sent.
            queued += operations.retry_deliveries(queryset.filter(pk__in=ids[start : start + size]))
            progress.update(min(start + size, len(ids)))
        left = len(ids) - queued
        summary = (
            f"Queued {queued} of {counted(len(ids), 'delivery', 'deliveries')} for another attempt."
        )
        if left:
            summary += f" {left} held by a worker right now were left alone."
        self.stdout.write(self.style.SUCCESS(summary))
