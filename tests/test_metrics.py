"""The Prometheus exposition, scraped as Prometheus would and read with its own parser."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import ArticleFactory, WebhookFactory
from tests.receiver import Response
from webhooks_app import operations, tasks
from webhooks_app.models import Delivery, Event, Lease

pytestmark = [pytest.mark.django_db, pytest.mark.portable]


def scrape(client) -> dict[str, list]:
    response = client.get("/metrics/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    families = text_string_to_metric_families(response.content.decode())
    return {family.name: family.samples for family in families}


def value(samples, **labels) -> float:
    (found,) = [s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items())]
    return found


def test_the_metrics_say_what_an_operator_alerts_on(client, receiver):
    WebhookFactory(url=receiver.url, name="good", retries=2)
    WebhookFactory(url=receiver.url, name="bad", retries=2, events=["update"])
    disabled = WebhookFactory(url=receiver.url, name="gone", events=["never"])
    operations.disable(disabled)
    article = ArticleFactory()
    tasks.run()  # good: created -> succeeded
    receiver.queue(Response(500))
    receiver.queue(Response(200, delay=0.3))
    article.title = "changed"
    article.save()
    tasks.run()  # good and bad both get the update: one fails (retrying), one takes 0.3 s

    metrics = scrape(client)

    deliveries = metrics["webhooks_deliveries_last_hour"]
    by_status: dict[str, float] = {}
    for sample in deliveries:
        by_status[sample.labels["status"]] = (
            by_status.get(sample.labels["status"], 0) + sample.value
        )
    # The create and one update succeeded; the other update failed and waits for its retry.
    assert by_status == {"succeeded": 2, "retrying": 1}
    assert {s.labels["webhook"] for s in deliveries} == {"good", "bad"}
    durations = {
        sample.labels["le"]: sample.value
        for sample in metrics["webhooks_attempt_duration_seconds"]
        if sample.name.endswith("_bucket")
    }
    assert durations["+Inf"] == 3
    assert durations["0.25"] == 2  # the slow answer is in the 0.5 s bucket, not below
    assert durations["0.5"] == 3
    assert value(metrics["webhooks_disabled_webhooks"]) == 1
    assert value(metrics["webhooks_due_deliveries"]) == 0  # the retry is not due yet
    assert value(metrics["webhooks_worker_up"]) == 0  # no cluster in this test


def test_oldest_due_and_worker_liveness(client, webhook):
    event = Event.objects.create(name="create", model="article", body="{}")
    Delivery.objects.create(
        event=event,
        webhook=webhook,
        status="pending",
        next_attempt_at=timezone.now() - datetime.timedelta(seconds=30),
    )
    # The oldest: a retry held back by its endpoint's rate limit. It counts as waiting too.
    limited = WebhookFactory(rate_limit=1)
    Delivery.objects.create(
        event=event,
        webhook=limited,
        status="pending",
        attempts=2,
        lane="retry",
        next_attempt_at=timezone.now() - datetime.timedelta(seconds=90),
    )
    Lease.objects.create(
        name=tasks.TICKER_LEASE,
        owner="a-worker",
        expires_at=timezone.now() + datetime.timedelta(seconds=4),
    )

    metrics = scrape(client)

    assert value(metrics["webhooks_due_deliveries"]) == 2
    assert 90 <= value(metrics["webhooks_oldest_due_seconds"]) < 100
    assert value(metrics["webhooks_worker_up"]) == 1
    seen = value(metrics["webhooks_worker_last_seen_timestamp_seconds"])
    assert abs(seen - timezone.now().timestamp()) < 5
