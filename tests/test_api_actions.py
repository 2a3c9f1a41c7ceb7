"""The webhook and delivery actions: test, rotate-secret, recover, retry."""

import datetime
import json

import pytest
from django.utils import timezone

from tests.factories import WebhookFactory
from tests.receiver import Response
from webhooks_app import signing
from webhooks_app.models import Delivery, DeliveryStatus, Event, Trigger

pytest_plugins = ["tests.api_support"]
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_settings")]


def failed_deliveries(webhook, count, created_at=None):
    """``count`` failed deliveries of ``webhook``, written in bulk like a backlog would be."""
    created_at = created_at or timezone.now() - datetime.timedelta(hours=1)
    events = Event.objects.bulk_create(
        Event(
            name="backup.complete",
            body=json.dumps({"event": "backup.complete", "n": n}),
            created_at=created_at,
        )
        for n in range(count)
    )
    return Delivery.objects.bulk_create(
        Delivery(
            event=event,
            webhook=webhook,
            status=DeliveryStatus.FAILED,
            attempts=1,
            max_attempts=1,
            last_status_code=500,
            created_at=created_at,
            completed_at=created_at,
        )
        for event in events
    )


# --- test ------------------------------------------------------------------------------------


def test_test_sends_now_and_returns_the_result(staff_client, hook, receiver):
    receiver.queue(Response(200, b"thanks " * 500))

    response = staff_client.post(
        f"/api/webhooks/{hook.pk}/test/",
        {"event": "backup.complete", "data": {"size": 3}},
        format="json",
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status_code"] == 200
    assert body["outcome"] == "succeeded"
    assert body["error"] == ""
    assert body["error_class"] == ""
    assert isinstance(body["duration_ms"], int)
    assert body["response_excerpt"].startswith("thanks")
    assert len(body["response_excerpt"]) == 1000
    (request,) = receiver.requests
    assert request.json["event"] == "backup.complete"
    assert request.json["data"] == {"size": 3}
    signing.verify_standard(hook.secret, request.headers, request.body)
    delivery = Delivery.objects.get(pk=body["delivery"])
    assert delivery.event_id == body["event"]
    assert delivery.attempts_log.get().trigger == Trigger.TEST


def test_test_defaults_to_the_test_event(staff_client, hook, receiver):
    response = staff_client.post(f"/api/webhooks/{hook.pk}/test/", {}, format="json")

    assert response.status_code == 200
    assert receiver.requests[0].json["event"] == "webhook.test"


def test_test_reports_a_failing_endpoint(staff_client, hook, receiver):
    receiver.queue(Response(503, b"down for maintenance"))

    body = staff_client.post(f"/api/webhooks/{hook.pk}/test/", {}, format="json").json()

    assert body["status_code"] == 503
    assert body["outcome"] == "failed"
    assert body["response_excerpt"] == "down for maintenance"


def test_test_reports_a_connection_error(staff_client, owner):
    hook = WebhookFactory(url="http://127.0.0.1:9/closed", owner=owner)

    body = staff_client.post(f"/api/webhooks/{hook.pk}/test/", {}, format="json").json()

    assert body["status_code"] is None
    assert body["error_class"] == "ConnectionError"
    assert body["error"]


def test_test_rejects_an_unknown_event_and_unknown_fields(staff_client, hook, receiver):
    url = f"/api/webhooks/{hook.pk}/test/"
    response = staff_client.post(url, {"event": "no.such.event"}, format="json")
    assert response.status_code == 400
    assert "no.such.event" in str(response.json()["event"])
    response = staff_client.post(url, {"evnt": "create"}, format="json")
    assert response.status_code == 400
    assert "evnt" in response.json()
    assert receiver.requests == []


def test_test_refuses_a_target_that_now_resolves_privately(staff_client, owner, receiver):
    # Accepted once, but DNS now points it inside: the test must not read that answer back.
    hook = WebhookFactory(url="https://db.internal/hook", owner=owner)

    response = staff_client.post(f"/api/webhooks/{hook.pk}/test/", {}, format="json")

    assert response.status_code == 400
    assert "db.internal resolves to a private address" in str(response.json()["url"])
    assert "10.0.0.5" not in str(response.json()["url"])  # what DNS answered is not repeated
    assert not Delivery.objects.exists()


def test_test_is_throttled_per_user(api_settings, staff_client, client_for, hook, staff):
    api_settings.WEBHOOKS = {**api_settings.WEBHOOKS, "TEST_THROTTLE_RATE": "2/min"}
    url = f"/api/webhooks/{hook.pk}/test/"

    codes = [staff_client.post(url, {}, format="json").status_code for _ in range(3)]

    assert codes == [200, 200, 429]
    # Another user has their own allowance; other routes are not throttled.
    superuser = type(staff).objects.create_superuser("root", "root@example.com", "pw")
    assert client_for(superuser).post(url, {}, format="json").status_code == 200
    assert staff_client.get(f"/api/webhooks/{hook.pk}/").status_code == 200


def test_test_is_not_throttled_when_the_rate_is_none(api_settings, staff_client, hook):
    api_settings.WEBHOOKS = {**api_settings.WEBHOOKS, "TEST_THROTTLE_RATE": None}
    url = f"/api/webhooks/{hook.pk}/test/"
    assert {staff_client.post(url, {}, format="json").status_code for _ in range(4)} == {200}


# --- rotate-secret ---------------------------------------------------------------------------


def test_rotate_secret_returns_the_new_secret_once(staff_client, hook, receiver):
    old = hook.secret
    before = timezone.now()

    response = staff_client.post(
        f"/api/webhooks/{hook.pk}/rotate-secret/", {"grace_seconds": 3600}, format="json"
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    hook.refresh_from_db()
    assert body["secret"] == hook.secret != old
    assert body["secret"].startswith("whsec_")
    expires = hook.previous_secret_expires_at
    assert (
        before + datetime.timedelta(hours=1)
        <= expires
        <= timezone.now() + datetime.timedelta(hours=1)
    )
    assert staff_client.get(f"/api/webhooks/{hook.pk}/").json()["secret"] != body["secret"]
    # Both secrets sign the Standard Webhooks header during the grace period.
    staff_client.post(f"/api/webhooks/{hook.pk}/test/", {}, format="json")
    (request,) = receiver.requests
    signing.verify_standard(old, request.headers, request.body)
    signing.verify_standard(hook.secret, request.headers, request.body)
    signing.verify_hex(hook.secret, request.header("X-Webhook-Signature"), request.body)


def test_rotate_secret_defaults_to_24_hours(staff_client, hook):
    staff_client.post(f"/api/webhooks/{hook.pk}/rotate-secret/", {}, format="json")
    hook.refresh_from_db()
    remaining = hook.previous_secret_expires_at - timezone.now()
    assert datetime.timedelta(hours=23, minutes=59) < remaining <= datetime.timedelta(hours=24)


@pytest.mark.parametrize("grace", [-1, 7 * 86400 + 1, "tomorrow"])
def test_rotate_secret_grace_is_bounded(staff_client, hook, grace):
    response = staff_client.post(
        f"/api/webhooks/{hook.pk}/rotate-secret/", {"grace_seconds": grace}, format="json"
    )
    assert response.status_code == 400
    assert "grace_seconds" in response.json()
    old = hook.secret
    hook.refresh_from_db()
    assert hook.secret == old


def test_rotate_secret_accepts_seven_days(staff_client, hook):
    response = staff_client.post(
        f"/api/webhooks/{hook.pk}/rotate-secret/", {"grace_seconds": 7 * 86400}, format="json"
    )
    assert response.status_code == 200


# --- recover ---------------------------------------------------------------------------------


def test_recover_queues_failed_deliveries_in_the_window(
    staff_client, hook, receiver, django_capture_on_commit_callbacks
):
    now = timezone.now()
    old = failed_deliveries(hook, 2, now - datetime.timedelta(days=3))
    recent = failed_deliveries(hook, 3, now - datetime.timedelta(hours=2))
    since = (now - datetime.timedelta(days=1)).isoformat()

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            f"/api/webhooks/{hook.pk}/recover/", {"since": since}, format="json"
        )

    assert response.status_code == 202, response.json()
    assert response.json() == {"queued": 3}
    receiver.wait_for(3)
    statuses = dict(Delivery.objects.values_list("pk", "status"))
    assert {statuses[d.pk] for d in recent} == {DeliveryStatus.SUCCEEDED}
    assert {statuses[d.pk] for d in old} == {DeliveryStatus.FAILED}


def test_recover_with_until(staff_client, hook, django_capture_on_commit_callbacks):
    now = timezone.now()
    failed_deliveries(hook, 2, now - datetime.timedelta(days=3))
    failed_deliveries(hook, 1, now - datetime.timedelta(hours=2))
    body = {
        "since": (now - datetime.timedelta(days=4)).isoformat(),
        "until": (now - datetime.timedelta(days=1)).isoformat(),
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(f"/api/webhooks/{hook.pk}/recover/", body, format="json")
    assert response.json() == {"queued": 2}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "since"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2030-01-01T00:00:00Z"}, "since"),
        ({"since": "2024-01-02T00:00:00Z", "until": "2024-01-01T00:00:00Z"}, "until"),
        ({"since": "2024-01-01T00:00:00Z", "window": "1d"}, "window"),
    ],
)
def test_recover_rejects_bad_windows(staff_client, hook, body, field):
    response = staff_client.post(f"/api/webhooks/{hook.pk}/recover/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()


def test_recover_over_a_thousand_failed_deliveries_completes_through_the_queue(
    staff_client, hook, receiver, django_capture_on_commit_callbacks
):
    # Headers and body leave the receiver in two writes: without this, Nagle's algorithm and
    # delayed ACKs add ~40 ms to each of the 1,000 requests.
    receiver.server.RequestHandlerClass.disable_nagle_algorithm = True
    failed_deliveries(hook, 1000)
    since = (timezone.now() - datetime.timedelta(days=1)).isoformat()

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            f"/api/webhooks/{hook.pk}/recover/", {"since": since}, format="json"
        )

    assert response.json() == {"queued": 1000}
    receiver.wait_for(1000, timeout=60)
    assert Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == 1000
    assert Delivery.objects.filter(attempts=2, lease_token="").count() == 1000
    assert len({r.json["n"] for r in receiver.requests}) == 1000


# --- retry -----------------------------------------------------------------------------------


def test_retry_gives_a_failed_delivery_one_more_attempt(
    staff_client, hook, receiver, django_capture_on_commit_callbacks
):
    (row,) = failed_deliveries(hook, 1)

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(f"/api/deliveries/{row.pk}/retry/")

    assert response.status_code == 202
    assert response.json() == {"queued": 1}
    row.refresh_from_db()
    assert row.status == DeliveryStatus.SUCCEEDED
    assert row.attempts_log.get().trigger == Trigger.MANUAL


def test_retry_of_a_delivery_in_flight_is_a_conflict(staff_client, hook):
    (row,) = failed_deliveries(hook, 1)
    Delivery.objects.filter(pk=row.pk).update(
        status=DeliveryStatus.PENDING,
        lease_token="held",
        next_attempt_at=timezone.now() + datetime.timedelta(seconds=45),
    )

    response = staff_client.post(f"/api/deliveries/{row.pk}/retry/")

    assert response.status_code == 409
    assert "right now" in response.json()["detail"]


def test_retry_of_a_missing_delivery_is_404(staff_client):
    assert staff_client.post("/api/deliveries/12345/retry/").status_code == 404
