"""Send a test event to a webhook, or to any URL, and show what happened."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError
from django.db import transaction
from django.utils import timezone

from webhooks_app import delivery, events, http, operations, registry
from webhooks_app.ids import new_event_id
from webhooks_app.management.cli import EXIT_PROBLEM, UsageError, WebhooksCommand, find_webhook
from webhooks_app.models import Trigger, Webhook
from webhooks_app.serialization import dumps

EXCERPT = 1000


class Command(WebhooksCommand):
    help = """Send a test event and print the request headers, the status, the duration and
the start of the response.

  manage.py webhooks_send_test 3                      # webhook id 3 (or its name)
  manage.py webhooks_send_test "Billing" --event backup.complete --data '{"size": 1}'
  manage.py webhooks_send_test --url http://127.0.0.1:9000/hook --secret whsec_...
  manage.py webhooks_send_test 3 --queue               # through the workers instead

A saved webhook's test is recorded in the delivery log (trigger "test"); an ad-hoc --url
send leaves nothing in the database. Exit status: 0 when the endpoint answered 2xx, 1 when
it did not (or could not be reached), 2 for bad arguments."""

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("webhook", nargs="?", help="id or exact name of a saved webhook")
        parser.add_argument("--url", help="send to this URL instead of a saved webhook")
        parser.add_argument("--secret", help="the secret to sign with (with --url)")
        parser.add_argument(
            "--event",
            default=registry.TEST_EVENT,
            help=f"event name from the catalogue (default {registry.TEST_EVENT})",
        )
        parser.add_argument("--model", default="", help="the payload's model name")
        parser.add_argument("--data", help="the payload's data, as JSON (e.g. '{\"id\": 1}')")
        parser.add_argument(
            "--queue",
            action="store_true",
            help="queue the delivery for the workers instead of sending it now",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if bool(options["webhook"]) == bool(options["url"]):
            raise UsageError("give a webhook (id or name) or --url, not both or neither")
        if options["secret"] and not options["url"]:
            raise UsageError("--secret goes with --url; a saved webhook signs with its own")
        if options["event"] not in registry.event_catalogue():
            raise UsageError(
                f"unknown event {options['event']!r}; declare custom events in "
                "WEBHOOKS['EVENTS'] (known: " + ", ".join(sorted(registry.event_catalogue())) + ")"
            )
        data = self._data(options["data"])
        if options["url"]:
            if options["queue"]:
                raise UsageError("--queue needs a saved webhook (the workers load it by id)")
            if not options["secret"]:
                raise UsageError("--url needs --secret")
            self._send_ad_hoc(options["url"], options["secret"], options, data)
            return
        webhook = find_webhook(options["webhook"])
        if options["queue"]:
            self._queue(webhook, options, data)
            return
        try:
            attempt = operations.send_test(
                webhook, event_name=options["event"], data=data, model=options["model"]
            )
        except operations.OperationError as exc:
            raise CommandError(str(exc), returncode=EXIT_PROBLEM) from exc
        self.stdout.write(f"Webhook {webhook.pk} ({webhook}), delivery {attempt.delivery_id}")
        self._report(
            attempt.request_method,
            attempt.request_url,
            attempt.request_headers,
            attempt.response_status,
            attempt.duration_ms,
            attempt.response_body,
            f"{attempt.error_class}: {attempt.error_message}" if attempt.error_class else "",
            attempt.summary,
        )
        hint = operations.reenable_hint(webhook, attempt)
        if hint:
            self.stdout.write(hint)

    def _data(self, text: str | None) -> Any:
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise UsageError(f"--data is not valid JSON: {exc}") from None

    def _queue(self, webhook: Webhook, options: dict[str, Any], data: Any) -> None:
        payload = {"message": "Test event from django-webhooks."} if data is None else data
        with transaction.atomic():
            event = events.record(
                options["event"],
                data=payload,
                model=options["model"],
                user=None,
                webhooks=[webhook],
                trigger=Trigger.TEST,
            )
        if event is None:
            raise CommandError(
                "Webhooks are disabled (WEBHOOKS['ENABLED'] is False).", returncode=EXIT_PROBLEM
            )
        row = event.deliveries.get()
        self.stdout.write(
            f"Queued delivery {row.pk} of {event.id} to webhook {webhook.pk} ({webhook}); "
            "the workers send it."
        )

    def _send_ad_hoc(self, url: str, secret: str, options: dict[str, Any], data: Any) -> None:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--url must start with http:// or https://, got {url!r}")
        # Never saved: an ad-hoc send leaves no rows behind.
        webhook = Webhook(url=url, secret=secret)
        event_id = new_event_id()
        body = dumps(
            {
                "id": event_id,
                "event": options["event"],
                "model": options["model"] or None,
                "timestamp": events.format_timestamp(timezone.now()),
                "data": {"message": "Test event from django-webhooks."} if data is None else data,
                "previous": None,
                "changed_fields": None,
                "user": None,
            }
        ).encode()
        request = delivery.build_request(webhook, event_id, body)
        result = http.send(request)
        self._report(
            request.method,
            request.url,
            delivery.redact_headers(request.headers),
            result.status_code,
            result.duration_ms,
            result.response_body,
            f"{result.error_class}: {result.error_message}" if result.error_class else "",
            result.summary,
        )

    def _report(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        status: int | None,
        duration_ms: int,
        response_body: str,
        error: str,
        summary: str,
    ) -> None:
        self.stdout.write(f"> {method} {url}")
        for name, value in headers.items():
            self.stdout.write(f"> {name}: {value}")
        if status is None:
            self.stdout.write(f"< no response after {duration_ms} ms: {error}")
        else:
            self.stdout.write(f"< HTTP {status} in {duration_ms} ms")
            excerpt = response_body[:EXCERPT]
            if excerpt:
                more = " …" if len(response_body) > EXCERPT else ""
                self.stdout.write(f"< {excerpt}{more}")
        if status is None or not 200 <= status < 300:
            raise CommandError(
                f"the endpoint did not answer 2xx: {summary}", returncode=EXIT_PROBLEM
            )
        self.stdout.write(self.style.SUCCESS("OK"))
