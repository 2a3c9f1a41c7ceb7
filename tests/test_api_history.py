"""Deliveries, events and event types through the API: filters, cursor pages, attempt detail."""

import datetime

import pytest
from django.utils import timezone

from tests.factories import ArticleFactory, WebhookFactory
from tests.receiver import Response
from webhooks_app import operations, registry
from webhooks_app.models import Delivery, Event

pytest_plugins = ["tests.api_support"]
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_settings")]


def ids(response):
    return [row["id"] for row in response.json()["results"]]


@pytest.fixture
def history(hook, receiver, owner):
    """Deliveries with a 200, a 503, a 404 and a connection error, at known times."""
    receiver.queue(Response(200), Response(503), Response(404))
    hook.headers = {"Authorization": "Bearer hunter2"}
    hook.save()
    ok = operations.send_test(hook, event_name="backup.complete")
    server_error = operations.send_test(hook, event_name="report.ready")
    client_error = operations.send_test(hook)
    dead = WebhookFactory(url="http://127.0.0.1:9/closed", owner=owner)
    no_response = operations.send_test(dead)
    rows = [a.delivery for a in (ok, server_error, client_error, no_response)]
    base = timezone.now() - datetime.timedelta(days=10)
    for offset, row in enumerate(rows):
        Delivery.objects.filter(pk=row.pk).update(created_at=base + datetime.timedelta(days=offset))
        Event.objects.filter(pk=row.event_id).update(
            created_at=base + datetime.timedelta(days=offset)
        )
    return rows


def test_deliveries_newest_first(staff_client, history):
    response = staff_client.get("/api/deliveries/")

    assert response.status_code == 200
    assert ids(response) == [row.pk for row in reversed(history)]
    first = response.json()["results"][0]
    assert first["event_name"] == "webhook.test"
    assert first["status"] == "failed"
    assert first["last_status_code"] is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=succeeded", [0]),
        ("status=failed", [3, 2, 1]),
        ("event=report.ready", [1]),
        ("status_class=2xx", [0]),
        ("status_class=4xx", [2]),
        ("status_class=5xx", [1]),
        ("status_class=none", [3]),
        ("model=article", []),
    ],
)
def test_delivery_filters(staff_client, history, query, expected):
    assert ids(staff_client.get(f"/api/deliveries/?{query}")) == [history[i].pk for i in expected]


def test_delivery_filters_by_webhook_and_date_range(staff_client, history):
    hook_id = history[0].webhook_id
    assert ids(staff_client.get(f"/api/deliveries/?webhook={hook_id}")) == [
        history[2].pk,
        history[1].pk,
        history[0].pk,
    ]
    start = (timezone.now() - datetime.timedelta(days=9, hours=12)).isoformat()
    end = (timezone.now() - datetime.timedelta(days=7, hours=12)).isoformat()
    response = staff_client.get("/api/deliveries/", {"created_after": start, "created_before": end})
    assert ids(response) == [history[2].pk, history[1].pk]


def test_date_filters_take_any_offset_python_accepts(staff_client, history):
    # PostgreSQL refuses offsets beyond ±15:59; the filter hands it UTC instead.
    far_east = datetime.timezone(datetime.timedelta(hours=23, minutes=17))
    start = (timezone.now() - datetime.timedelta(days=9, hours=12)).astimezone(far_east)
    end = (timezone.now() - datetime.timedelta(days=7, hours=12)).astimezone(far_east)

    response = staff_client.get(
        "/api/deliveries/", {"created_after": start.isoformat(), "created_before": end.isoformat()}
    )

    assert ids(response) == [history[2].pk, history[1].pk]


def test_delivery_filter_errors_are_400(staff_client, history):
    for query, field in (
        ("status=lost", "status"),
        ("status_class=6xx", "status_class"),
        ("created_after=yesterday", "created_after"),
        ("created_before=tomorrow", "created_before"),
        # Before year 1 in UTC: not a moment the database can hold.
        ("created_after=0001-01-01T00:00:00%2B05:00", "created_after"),
        ("webhook=x", "webhook"),
    ):
        response = staff_client.get(f"/api/deliveries/?{query}")
        assert response.status_code == 400, query
        assert list(response.json()) == [field], query


def test_delivery_lists_use_cursor_pages(staff_client, history):
    first = staff_client.get("/api/deliveries/?page_size=3").json()
    assert len(first["results"]) == 3
    assert "cursor=" in first["next"]
    second = staff_client.get(first["next"]).json()
    assert [row["id"] for row in second["results"]] == [history[0].pk]
    assert second["next"] is None


def test_webhook_deliveries_are_that_webhooks(staff_client, history):
    hook_id = history[0].webhook_id
    response = staff_client.get(f"/api/webhooks/{hook_id}/deliveries/?status=failed")
    assert ids(response) == [history[2].pk, history[1].pk]
    assert staff_client.get("/api/webhooks/999/deliveries/").status_code == 404


def test_delivery_detail_has_every_attempt_with_redacted_headers(staff_client, history):
    row = history[1]

    body = staff_client.get(f"/api/deliveries/{row.pk}/").json()

    (attempt,) = body["attempts_log"]
    assert attempt["response_status"] == 503
    assert attempt["trigger"] == "test"
    assert attempt["outcome"] == "failed"
    assert attempt["request_method"] == "POST"
    assert attempt["request_headers"]["Authorization"] == "[redacted]"
    assert "webhook-signature" in attempt["request_headers"]
    assert "hunter2" not in str(body)
    assert isinstance(attempt["duration_ms"], int)
    assert attempt["response_headers"]
    no_response = staff_client.get(f"/api/deliveries/{history[3].pk}/").json()
    assert no_response["attempts_log"][0]["error_class"] == "ConnectionError"
    assert staff_client.get("/api/deliveries/999/").status_code == 404


def test_events_list_filter_and_detail(staff_client, history):
    article = ArticleFactory(title="x")
    event = Event.objects.get(model="article")

    listed = staff_client.get("/api/events/").json()["results"]
    assert listed[0]["id"] == event.id
    assert len(listed) == 5
    by_object = staff_client.get(f"/api/events/?model=article&object_id={article.pk}")
    assert ids(by_object) == [event.id]
    assert ids(staff_client.get("/api/events/?event=report.ready")) == [history[1].event_id]
    start = (timezone.now() - datetime.timedelta(days=8, hours=12)).isoformat()
    end = (timezone.now() - datetime.timedelta(days=7, hours=12)).isoformat()
    dated = staff_client.get("/api/events/", {"created_after": start, "created_before": end})
    assert ids(dated) == [history[2].event_id]

    detail = staff_client.get(f"/api/events/{history[1].event_id}/").json()
    assert detail["payload"]["event"] == "report.ready"
    assert [d["id"] for d in detail["deliveries"]] == [history[1].pk]
    assert staff_client.get("/api/events/evt_missing/").status_code == 404


def test_event_types_are_the_catalogue(staff_client):
    body = staff_client.get("/api/event-types/").json()

    assert {row["name"]: row["description"] for row in body} == registry.event_catalogue()
    assert {"create", "publish", "backup.complete", "user.login", "webhook.test"} <= {
        row["name"] for row in body
    }


def test_owner_sees_only_their_deliveries_and_events(
    owner_scoped, history, client_for, other_owner, receiver
):
    theirs = WebhookFactory(url=receiver.url, owner=other_owner)
    foreign = operations.send_test(theirs, event_name="report.ready").delivery
    client = client_for(history[0].webhook.owner)

    assert foreign.pk not in ids(client.get("/api/deliveries/"))
    visible = ids(client.get("/api/deliveries/"))
    # (Creating other_owner emitted user.create to the owner's catch-all webhooks too.)
    owned = Delivery.objects.filter(webhook__owner=history[0].webhook.owner)
    assert sorted(visible) == sorted(owned.values_list("pk", flat=True))
    assert client.get(f"/api/deliveries/{foreign.pk}/").status_code == 404
    assert client.get(f"/api/webhooks/{theirs.pk}/deliveries/").status_code == 404
    assert foreign.event_id not in ids(client.get("/api/events/"))
    assert client.get(f"/api/events/{foreign.event_id}/").status_code == 404
    assert client_for(other_owner).get("/api/deliveries/").json()["results"][0]["id"] == foreign.pk
