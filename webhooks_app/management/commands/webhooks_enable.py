"""Enable a disabled webhook again, optionally resending what was skipped meanwhile."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from webhooks_app import operations
from webhooks_app.management.cli import EXIT_PROBLEM, WebhooksCommand, find_webhook


class Command(WebhooksCommand):
    help = """Enable a webhook again (a 410, the failure policy or an operator disabled it).

  manage.py webhooks_enable 3                    # webhook id 3 (or its exact name)
  manage.py webhooks_enable "Billing" --resend-skipped

With --resend-skipped the deliveries skipped since it was disabled are queued again; each
that was never attempted gets its full retry schedule. Exit status: 0 done, 1 the webhook
cannot be enabled here (declared in settings), 2 bad arguments."""

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("webhook", help="id or exact name of a saved webhook")
        parser.add_argument(
            "--resend-skipped",
            action="store_true",
            help="also resend the deliveries skipped since it was disabled",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        webhook = find_webhook(options["webhook"])
        was_active = webhook.is_active
        try:
            queued = operations.enable(webhook, resend_skipped=options["resend_skipped"])
        except operations.OperationError as exc:
            raise CommandError(str(exc), returncode=EXIT_PROBLEM) from exc
        state = "was already enabled" if was_active else "is enabled again"
        self.stdout.write(f"Webhook {webhook.pk} ({webhook}) {state}.")
        if options["resend_skipped"]:
            noun = "delivery" if queued == 1 else "deliveries"
            self.stdout.write(f"Queued {queued} skipped {noun} to send again.")
