"""Queue health for monitoring: exit status 1 when a threshold is crossed."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from webhooks_app import stats
from webhooks_app.management.cli import (
    EXIT_PROBLEM,
    UsageError,
    WebhooksCommand,
    counted,
    parse_duration,
)


class Command(WebhooksCommand):
    help = """Print the delivery queue's health: deliveries due now, how long the oldest has
waited, whether a worker is alive, failed attempts in the last hour per webhook, and
disabled webhooks.

  manage.py webhooks_status
  manage.py webhooks_status --max-due 1000 --max-oldest 5m --max-failures 50 --json

Exit status: 0 when every threshold given holds and a worker was seen in the last minute, 1
when one is crossed or no worker is alive (the reasons go to
stderr, and into "problems" with --json), 2 for bad arguments. For cron, Nagios-style checks
or a Kubernetes probe."""

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--max-due", type=int, help="most deliveries that may be due")
        parser.add_argument(
            "--max-oldest", help="longest a due delivery may have waited (e.g. 90s, 5m)"
        )
        parser.add_argument(
            "--max-failures", type=int, help="most failed attempts per webhook in the last hour"
        )
        parser.add_argument(
            "--fail-on-disabled", action="store_true", help="a disabled webhook is a problem"
        )
        parser.add_argument(
            "--no-worker-check",
            action="store_true",
            help="do not count a missing worker as a problem (e.g. on a machine without one)",
        )
        parser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        for name in ("max_due", "max_failures"):
            if options[name] is not None and options[name] < 0:
                raise UsageError(f"--{name.replace('_', '-')} must not be negative")
        max_oldest = parse_duration(options["max_oldest"]) if options["max_oldest"] else None
        health = stats.queue_health()
        problems = []
        if not health.workers_alive and not options["no_worker_check"]:
            problems.append(health.workers_text)
        if options["max_due"] is not None and health.due > options["max_due"]:
            due = counted(health.due, "delivery", "deliveries")
            problems.append(f"{due} due (max {options['max_due']})")
        if max_oldest is not None and health.oldest_due_seconds > max_oldest.total_seconds():
            problems.append(
                f"oldest due delivery waited {health.oldest_due_seconds:.0f}s "
                f"(max {max_oldest.total_seconds():.0f}s)"
            )
        if options["max_failures"] is not None:
            for pk, count in sorted(health.failures_last_hour.items()):
                if count > options["max_failures"]:
                    name = health.webhook_names.get(pk, "")
                    attempts = counted(count, "failed attempt", "failed attempts")
                    problems.append(
                        f"webhook {pk} ({name}): {attempts} in the last hour "
                        f"(max {options['max_failures']})"
                    )
        if options["fail_on_disabled"]:
            problems.extend(
                f"webhook {hook.pk} ({hook}) is disabled: {hook.disabled_reason}"
                for hook in health.disabled
            )

        if options["json"]:
            self.stdout.write(json.dumps({**health.as_dict(), "problems": problems}, indent=2))
        else:
            self._text(health)
        if problems:
            raise CommandError("; ".join(problems), returncode=EXIT_PROBLEM)

    def _text(self, health: stats.QueueHealth) -> None:
        out = self.stdout.write
        out(f"workers:                {health.workers_text}")
        out(f"deliveries due now:     {health.due}")
        out(f"oldest due waited:      {health.oldest_due_seconds:.0f}s")
        out("failed attempts, last hour:")
        for item in health.as_dict()["failures_last_hour"] or [{"webhook_id": None}]:
            if item["webhook_id"] is None:
                out("  none")
            else:
                out(f"  webhook {item['webhook_id']} ({item['webhook']}): {item['failures']}")
        out("disabled webhooks:")
        for hook in health.disabled:
            out(f"  webhook {hook.pk} ({hook}): {hook.disabled_reason}")
        if not health.disabled:
            out("  none")
