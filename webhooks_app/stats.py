"""Read-only numbers about delivery health, shared by the admin and the management commands.

Every query here is bounded by an index: a time window on ``created_at`` / ``started_at`` or
the dispatcher's ``(status, next_attempt_at)`` index, never a scan of the whole table, so the
pages and commands that use them stay fast with millions of deliveries.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, IntegerField, Min, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from webhooks_app import tasks
from webhooks_app.models import Delivery, DeliveryAttempt, DeliveryStatus, Webhook

SETTLED = (DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED)
# A worker not seen for this long is taken for dead (its ticker renews every second; another
# process takes the ticker over within seconds when the holder dies).
WORKER_SILENCE_SECONDS = 60
FAILED_OUTCOMES = (
    DeliveryAttempt.Outcome.FAILED,
    DeliveryAttempt.Outcome.RETRYING,
    DeliveryAttempt.Outcome.DISABLED,
)


def _count_subquery(since: datetime.datetime, condition: Q) -> Coalesce:
    """A webhook's deliveries since ``since`` matching ``condition``, as a correlated
    subquery. ``condition`` is a COUNT filter, not a WHERE: with only the webhook and the time
    in the WHERE, the ``(webhook, -created_at)`` index is the one plan there is."""
    counted = (
        Delivery.objects.filter(webhook=OuterRef("pk"), created_at__gte=since)
        .order_by()
        .values("webhook")
        .annotate(n=Count("pk", filter=condition))
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def with_success_rate(queryset: QuerySet[Webhook], since: datetime.datetime) -> QuerySet[Webhook]:
    """Annotate ``settled_24h`` and ``succeeded_24h``: deliveries created since ``since``."""
    return queryset.annotate(
        settled_24h=_count_subquery(since, Q(status__in=SETTLED)),
        succeeded_24h=_count_subquery(since, Q(status=DeliveryStatus.SUCCEEDED)),
    )


def success_rate(succeeded: int, settled: int) -> float | None:
    return None if not settled else succeeded / settled


def status_counts(since: datetime.datetime) -> dict[str, int]:
    """Deliveries created since ``since``, by status (one index range scan per status)."""
    return {
        status: Delivery.objects.filter(status=status, created_at__gte=since).count()
        for status in DeliveryStatus.values
    }


@dataclass
class Series:
    webhook_id: int
    label: str
    # (bucket start, succeeded, settled) per hour that had settled deliveries.
    points: list[tuple[datetime.datetime, int, int]] = field(default_factory=list)


def success_over_time(
    since: datetime.datetime,
    until: datetime.datetime,
    bucket: datetime.timedelta,
    limit: int = 8,
) -> list[Series]:
    """Per-webhook success per ``bucket`` in ``[since, until)``, for the ``limit`` busiest.

    One query per bucket, each a range of the ``created_at`` index grouped by webhook: no
    per-row date truncation (a Python function per row on SQLite), so a week of a busy site
    is read in well under a second.
    """
    by_webhook: dict[int, Series] = {}
    start = since
    while start < until:
        end = min(start + bucket, until)
        rows = (
            Delivery.objects.filter(created_at__gte=start, created_at__lt=end, status__in=SETTLED)
            .order_by()
            .values("webhook_id")
            .annotate(
                settled=Count("pk"),
                succeeded=Count("pk", filter=Q(status=DeliveryStatus.SUCCEEDED)),
            )
        )
        for row in rows:
            series = by_webhook.setdefault(row["webhook_id"], Series(row["webhook_id"], ""))
            series.points.append((start, row["succeeded"], row["settled"]))
        start = end
    busiest = sorted(by_webhook.values(), key=lambda s: -sum(p[2] for p in s.points))[:limit]
    names = webhook_names(s.webhook_id for s in busiest)
    for series in busiest:
        series.label = names.get(series.webhook_id, f"webhook {series.webhook_id}")
    return sorted(busiest, key=lambda s: s.label)


@dataclass
class Activity:
    """One bucket of a webhook's attempts, by outcome, and how long they took."""

    start: datetime.datetime
    succeeded: int = 0
    failed: int = 0
    retrying: int = 0
    p50_ms: int | None = None
    p95_ms: int | None = None


# An attempt's outcome -> the chart's series ("disabled": the attempt failed, and the webhook
# was disabled by it).
_ACTIVITY_SERIES = {
    DeliveryAttempt.Outcome.SUCCEEDED: "succeeded",
    DeliveryAttempt.Outcome.FAILED: "failed",
    DeliveryAttempt.Outcome.DISABLED: "failed",
    DeliveryAttempt.Outcome.RETRYING: "retrying",
}


def webhook_activity(
    webhook_id: int,
    since: datetime.datetime,
    until: datetime.datetime,
    bucket: datetime.timedelta,
) -> list[Activity]:
    """A webhook's attempts started in ``[since, until)`` per ``bucket``: succeeded, failed,
    failed-and-retrying, and the p50 / p95 of their durations.

    One query per bucket, a range of the ``(webhook, -started_at)`` index grouped by outcome
    and duration: the database counts, Python reads one row per distinct (outcome, duration)
    pair (a few hundred), so the percentiles are exact and a week of a busy endpoint is not
    carried into Python row by row (bench/admin_lists.py: 117,000 attempts in the week).
    """
    buckets: list[Activity] = []
    start = since
    while start < until:
        end = min(start + bucket, until)
        item = Activity(start)
        rows = (
            DeliveryAttempt.objects.filter(
                webhook_id=webhook_id, started_at__gte=start, started_at__lt=end
            )
            .order_by()
            .values_list("outcome", "duration_ms")
            .annotate(n=Count("pk"))
        )
        durations: list[tuple[int, int]] = []
        for outcome, duration_ms, n in rows:
            series = _ACTIVITY_SERIES.get(outcome)
            if series is not None:
                setattr(item, series, getattr(item, series) + n)
            durations.append((duration_ms, n))
        item.p50_ms = _percentile(durations, 0.50)
        item.p95_ms = _percentile(durations, 0.95)
        buckets.append(item)
        start = end
    return buckets


def _percentile(counted: list[tuple[int, int]], share: float) -> int | None:
    """The nearest-rank percentile of values given as ``(value, how many)`` pairs."""
    total = sum(n for _, n in counted)
    if not total:
        return None
    # Half ranks round up (round() would alternate between the lower and upper median).
    rank = min(total - 1, math.floor(share * (total - 1) + 0.5))
    seen = 0
    for value, n in sorted(counted):
        seen += n
        if seen > rank:
            return value
    raise AssertionError("unreachable: rank < total")


@dataclass
class QueueHealth:
    """What ``webhooks_status`` and the health page report."""

    now: datetime.datetime
    due: int
    oldest_due_at: datetime.datetime | None
    failures_last_hour: dict[int, int]
    disabled: list[Webhook]
    webhook_names: dict[int, str]
    # The workers' heartbeat (tasks.worker_seen_at); None if no worker ever ran here.
    worker_seen_at: datetime.datetime | None = None

    @property
    def workers_alive(self) -> bool:
        return worker_alive(self.worker_seen_at, self.now)

    @property
    def workers_text(self) -> str:
        return describe_workers(self.worker_seen_at, self.now)

    @property
    def oldest_due_seconds(self) -> float:
        if self.oldest_due_at is None:
            return 0.0
        return max(0.0, (self.now - self.oldest_due_at).total_seconds())

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "deliveries_due": self.due,
            "oldest_due_at": self.oldest_due_at.isoformat() if self.oldest_due_at else None,
            "oldest_due_seconds": round(self.oldest_due_seconds, 1),
            "workers_alive": self.workers_alive,
            "worker_seen_at": self.worker_seen_at.isoformat() if self.worker_seen_at else None,
            "failures_last_hour": [
                {"webhook_id": pk, "webhook": self.webhook_names.get(pk, ""), "failures": n}
                for pk, n in sorted(self.failures_last_hour.items(), key=lambda kv: -kv[1])
            ],
            "disabled_webhooks": [
                {
                    "webhook_id": hook.pk,
                    "webhook": str(hook),
                    "reason": hook.disabled_reason,
                    "disabled_at": hook.disabled_at.isoformat() if hook.disabled_at else None,
                }
                for hook in self.disabled
            ],
        }


def failures_since(since: datetime.datetime) -> dict[int, int]:
    """Failed attempts per webhook since ``since`` (the attempts' ``started_at`` index, and
    their own webhook column: no join with the deliveries)."""
    rows = (
        DeliveryAttempt.objects.filter(
            started_at__gte=since, outcome__in=FAILED_OUTCOMES, webhook__isnull=False
        )
        .order_by()
        .values("webhook_id")
        .annotate(n=Count("pk"))
    )
    return {row["webhook_id"]: row["n"] for row in rows}


def queue_health(now: datetime.datetime | None = None) -> QueueHealth:
    now = now or timezone.now()
    due = Delivery.objects.due(now)
    # Leased rows are "due" only once their lease ran out; their next_attempt_at says when.
    oldest = due.aggregate(oldest=Min("next_attempt_at"))["oldest"]
    failures = failures_since(now - datetime.timedelta(hours=1))
    disabled = list(Webhook.objects.filter(is_active=False).order_by("name", "pk"))
    return QueueHealth(
        now=now,
        due=due.count(),
        oldest_due_at=oldest,
        failures_last_hour=failures,
        disabled=disabled,
        webhook_names=webhook_names(failures),
        worker_seen_at=tasks.worker_seen_at(),
    )


def describe_age(seconds: float) -> str:
    """``45 s``, ``2 min``, ``3 h``, ``2 days``: an age as an operator says it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def describe_workers(seen: datetime.datetime | None, now: datetime.datetime) -> str:
    """``alive (seen 1 s ago)`` or ``no worker seen for 2 min``: what an operator reads."""
    if seen is None:
        return "no worker seen (is a qcluster running?)"
    silence = max(0.0, (now - seen).total_seconds())
    if worker_alive(seen, now):
        return f"alive (seen {silence:.0f} s ago)"
    return f"no worker seen for {describe_age(silence)} (is a qcluster running?)"


def workers_down_with_work_due() -> str | None:
    """When deliveries are due and no worker is alive, what to say about the workers (the
    admin's banner); else None. Two indexed lookups, so every admin page can afford it."""
    now = timezone.now()
    seen = tasks.worker_seen_at()
    if worker_alive(seen, now) or not Delivery.objects.due(now).exists():
        return None
    return describe_workers(seen, now)


def worker_alive(seen: datetime.datetime | None, now: datetime.datetime) -> bool:
    """A worker seen within WORKER_SILENCE_SECONDS counts as alive."""
    return seen is not None and (now - seen).total_seconds() <= WORKER_SILENCE_SECONDS


def webhook_names(ids: Iterable[int]) -> dict[int, str]:
    return {pk: str(hook) for pk, hook in Webhook.objects.in_bulk(list(ids)).items()}
