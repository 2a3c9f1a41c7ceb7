"""Prometheus metrics, for monitoring: ``pip install django-webhooks[metrics]``.

Mount the view where your Prometheus scrapes, behind whatever guards your other internal
endpoints (it names your webhooks)::

    from webhooks_app.metrics import metrics_view
    urlpatterns += [path("internal/webhook-metrics", staff_member_required(metrics_view))]

Everything is read from the database when scraped, so any process can serve it and every
cluster is counted, with queries bounded by indexes (recent windows of ``created_at`` and
``started_at``, the pending rows' partial index): a scrape stays cheap with millions of
deliveries. The windowed figures are gauges (what happened in the last hour, the last five
minutes), not counters: deliveries are pruned, so the database has no count that only grows.
docs/admin.md has alert rules to copy.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

from django.db.models import Count, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from webhooks_app import stats
from webhooks_app.models import Delivery, DeliveryAttempt, HeldFanout, Webhook, is_retrying

DELIVERY_WINDOW = datetime.timedelta(hours=1)
DURATION_WINDOW = datetime.timedelta(minutes=5)
# Seconds; an attempt's whole duration (connect, headers, body), up to the longest timeout.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class WebhooksCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        # Names only: loading whole webhooks would decrypt every secret for nothing.
        names = {
            pk: name or url for pk, name, url in Webhook.objects.values_list("pk", "name", "url")
        }
        yield from self._deliveries(now, names)
        yield self._durations(now)
        health = stats.queue_health(now)
        yield _gauge(
            "webhooks_due_deliveries",
            "Deliveries due now and not being sent (retrying and rate-limited ones included).",
            health.due,
        )
        yield _gauge(
            "webhooks_oldest_due_seconds",
            "How long the oldest due delivery has waited, seconds (0 when none is due).",
            health.oldest_due_seconds,
        )
        yield _gauge(
            "webhooks_disabled_webhooks", "Webhooks that are disabled.", len(health.disabled)
        )
        yield from self._holds(now, names)
        yield _gauge(
            "webhooks_worker_up",
            f"1 when a worker was seen in the last {stats.WORKER_SILENCE_SECONDS} s, else 0.",
            1 if health.workers_alive else 0,
        )
        seen = health.worker_seen_at
        yield _gauge(
            "webhooks_worker_last_seen_timestamp_seconds",
            "When a worker was last seen, Unix seconds (0: never).",
            seen.timestamp() if seen else 0,
        )

    def _deliveries(self, now: datetime.datetime, names: dict[int, str]) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "webhooks_deliveries_last_hour",
            "Deliveries created in the last hour, by webhook and where they stand now.",
            labels=["webhook_id", "webhook", "status"],
        )
        rows = (
            Delivery.objects.filter(created_at__gte=now - DELIVERY_WINDOW)
            .order_by()
            .values("webhook_id", "status", "attempts")
            .annotate(n=Count("pk"))
        )
        counts: dict[tuple[int, str], int] = {}
        for row in rows:
            status = row["status"]
            if is_retrying(status, row["attempts"]):
                status = "retrying"  # failed before, waiting for its next attempt
            key = (row["webhook_id"], status)
            counts[key] = counts.get(key, 0) + row["n"]
        for (webhook_id, status), count in sorted(counts.items()):
            family.add_metric([str(webhook_id), names.get(webhook_id, ""), status], count)
        yield family

    def _holds(self, now: datetime.datetime, names: dict[int, str]) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "webhooks_held_back_seconds",
            "How long each held-back webhook (a slow endpoint with a deep queue, whose new "
            "events wait as events) has been held back, seconds.",
            labels=["webhook_id", "webhook"],
        )
        for webhook_id, held_at in HeldFanout.objects.values_list("webhook_id", "held_at"):
            seconds = max(0.0, (now - held_at).total_seconds())
            family.add_metric([str(webhook_id), names.get(webhook_id, "")], seconds)
        yield family

    def _durations(self, now: datetime.datetime) -> Metric:
        recent = DeliveryAttempt.objects.filter(started_at__gte=now - DURATION_WINDOW)
        aggregates: dict[str, Any] = {
            f"le_{index}": Count("pk", filter=Q(duration_ms__lte=bound * 1000))
            for index, bound in enumerate(DURATION_BUCKETS)
        }
        totals = recent.aggregate(count=Count("pk"), **aggregates, milliseconds=Sum("duration_ms"))
        buckets = [
            (f"{bound:g}", float(totals[f"le_{index}"]))
            for index, bound in enumerate(DURATION_BUCKETS)
        ]
        buckets.append(("+Inf", float(totals["count"])))
        return GaugeHistogramMetricFamily(
            "webhooks_attempt_duration_seconds",
            "Attempts started in the last five minutes, by how long they took (seconds).",
            buckets=buckets,
            gsum_value=float(totals["milliseconds"] or 0) / 1000,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def registry() -> CollectorRegistry:
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(WebhooksCollector())
    return collectors


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition of the metrics above."""
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
