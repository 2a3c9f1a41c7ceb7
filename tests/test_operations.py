"""The operations the API, the admin and the commands share."""

import datetime
import threading
import time

import pytest
from django.db import connections, transaction
from django.utils import timezone

from tests.factories import ArticleFactory, WebhookFactory
from tests.receiver import Response
from webhooks_app import claims, delivery, events, operations, signing, sql, tasks
from webhooks_app.models import (
    CLAIM_LOCK,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Event,
    Webhook,
)

pytestmark = [pytest.mark.django_db, pytest.mark.portable]


@pytest.fixture
def failed_delivery(webhook, receiver, django_capture_on_commit_callbacks, settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "RETRIES": 0}
    webhook.retries = 0
    webhook.save()
    receiver.queue(Response(500))
    with django_capture_on_commit_callbacks(execute=True):
        ArticleFactory()
    row = Delivery.objects.get()
    assert row.status == DeliveryStatus.FAILED
    return row


def test_send_test_attempts_now_and_records_it(webhook, receiver):
    attempt = operations.send_test(webhook, data={"hello": "world"})

    (request,) = receiver.requests
    assert attempt.response_status == 200
    assert attempt.trigger == "test"
    assert request.json["event"] == "webhook.test"
    assert request.json["data"] == {"hello": "world"}
    signing.verify_standard(webhook.secret, request.headers, request.body)
    assert attempt.delivery.status == DeliveryStatus.SUCCEEDED
    assert Delivery.objects.get().attempts == 1


def test_send_test_reaches_a_disabled_webhook_and_reports_failure(webhook, receiver):
    operations.disable(webhook, "paused")
    receiver.queue(Response(503, b"down"))

    attempt = operations.send_test(webhook, event_name="backup.complete")

    assert attempt.response_status == 503
    assert attempt.response_body == "down"
    assert attempt.outcome == "failed"
    assert Delivery.objects.get().status == DeliveryStatus.FAILED


def test_retry_gives_a_failed_delivery_one_more_attempt(
    failed_delivery, receiver, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        assert operations.retry_deliveries(Delivery.objects.all()) == 1

    failed_delivery.refresh_from_db()
    assert failed_delivery.status == DeliveryStatus.SUCCEEDED
    assert failed_delivery.attempts == 2
    assert [a.trigger for a in failed_delivery.attempts_log.all()] == ["automatic", "manual"]
    first, second = receiver.requests
    assert first.body == second.body


def test_retry_leaves_deliveries_in_flight_alone(webhook):
    ArticleFactory()
    (claimed,) = claims.claim(
        "a-worker", claims.Capacity(total=10, retry=5), using="default", fan_out_limit=10
    )
    row = claimed.delivery

    assert operations.retry_deliveries([row]) == 0
    row.refresh_from_db()
    assert row.next_trigger == "automatic"
    assert row.lease_token == "a-worker"


def test_recover_resends_failed_deliveries_in_the_window(
    failed_delivery, django_capture_on_commit_callbacks
):
    now = timezone.now()
    webhook = failed_delivery.webhook
    old = Delivery.objects.create(
        event=failed_delivery.event,
        webhook=webhook,
        status=DeliveryStatus.FAILED,
        created_at=now - datetime.timedelta(days=3),
    )

    with django_capture_on_commit_callbacks(execute=True):
        queued = operations.recover(webhook, since=now - datetime.timedelta(hours=1))

    assert queued == 1
    old.refresh_from_db()
    assert old.status == DeliveryStatus.FAILED
    with pytest.raises(operations.OperationError, match="until"):
        operations.recover(webhook, since=now, until=now - datetime.timedelta(seconds=1))


def test_redeliver_event_goes_to_every_subscriber_now(
    webhook, receiver, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        ArticleFactory()
    second = WebhookFactory(url=receiver.url)

    with django_capture_on_commit_callbacks(execute=True):
        assert operations.redeliver_event(Event.objects.get()) == 2

    assert {d.webhook_id for d in Delivery.objects.filter(next_trigger="automatic")} >= {second.pk}
    assert len(receiver.wait_for(3)) == 3
    ids = {request.header("webhook-id") for request in receiver.requests}
    assert len(ids) == 1


def test_rotate_secret_keeps_the_old_one_signing_for_the_grace_period(webhook, receiver):
    old = webhook.secret
    new = operations.rotate_secret(webhook, grace=datetime.timedelta(hours=1))
    operations.send_test(webhook)

    (request,) = receiver.requests
    assert new != old
    assert new.startswith("whsec_")
    assert len(request.header("webhook-signature").split()) == 2
    signing.verify_standard(new, request.headers, request.body)
    signing.verify_standard(old, request.headers, request.body)


def test_rotate_secret_bounds_and_managed_webhooks(webhook):
    with pytest.raises(operations.OperationError, match="7 days"):
        operations.rotate_secret(webhook, grace=datetime.timedelta(days=8))
    webhook.managed_by_settings = True
    with pytest.raises(operations.OperationError, match="settings"):
        operations.rotate_secret(webhook)


def test_enable_clears_the_reason_and_failure_count(webhook):
    operations.disable(webhook, "Too many failures")
    webhook.consecutive_failures = 9
    operations.enable(webhook)

    webhook.refresh_from_db()
    assert webhook.is_active
    assert webhook.disabled_reason == ""
    assert webhook.consecutive_failures == 0


def delete_while_a_worker_writes(write, delete):
    """Run ``write`` in a transaction on one thread and, while that is still open,
    ``delete`` on another, which must wait for it; returns what either raised."""
    wrote, go_on = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def in_thread(function):
        try:
            function()
        except BaseException as exc:  # reported by the caller's assertion
            errors.append(exc)
        finally:
            wrote.set()
            connections.close_all()

    def write_and_wait():
        with transaction.atomic():
            write()
            wrote.set()
            go_on.wait(10)

    writer = threading.Thread(target=in_thread, args=[write_and_wait])
    writer.start()
    assert wrote.wait(10)
    deleter = threading.Thread(target=in_thread, args=[delete])
    deleter.start()
    try:
        time.sleep(0.3)
        assert deleter.is_alive()  # the deletion waits for the write
    finally:
        go_on.set()
        writer.join(10)
        deleter.join(10)
    return errors


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["instance", "queryset"])
def test_deleting_a_webhook_waits_for_the_claim_that_is_making_its_rows(how, monkeypatch):
    """Django collects a webhook's deliveries before it deletes the webhook, and the foreign
    keys are checked at commit: a claim that makes a row of it meanwhile (a new event's; a
    held or disabled webhook's, which sweeps make 500 at a time) failed, or failed the
    deletion, whichever committed second. Now neither fails and no row outlives it."""
    webhook = WebhookFactory()
    monkeypatch.setattr(tasks, "wake", lambda **kwargs: None)
    ArticleFactory()  # committed, pending fan-out: no worker woken

    def claim():
        assert claims.fan_out(timezone.now(), limit=10, using="default") == 1

    def delete():
        if how == "instance":
            webhook.delete()
        else:
            Webhook.objects.filter(pk=webhook.pk).delete()

    assert delete_while_a_worker_writes(claim, delete) == []
    assert not Webhook.objects.exists()
    assert not Delivery.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_deleting_a_webhook_waits_for_a_redelivery_making_its_row():
    webhook = WebhookFactory()
    event = Event.objects.create(name="create", body="{}")

    def redeliver():
        assert len(events.create_deliveries(event, [webhook])) == 1

    assert delete_while_a_worker_writes(redeliver, webhook.delete) == []
    assert not Delivery.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_webhook_deleted_before_its_row_is_made_gets_none():
    gone, kept = WebhookFactory(), WebhookFactory()
    stale = Webhook.objects.get(pk=gone.pk)  # as a redelivery or a test send read it
    gone.delete()

    made = events.create_deliveries(Event.objects.create(name="create", body="{}"), [stale, kept])

    assert [row.webhook_id for row in made] == [kept.pk]
    with pytest.raises(operations.OperationError, match="The webhook was deleted"):
        operations.send_test(stale)


def leased_and_failed(*webhooks):
    """A row of each webhook leased to "a-worker", and a recorder holding its failed
    attempt, not yet written."""
    event = Event.objects.create(name="create", body="{}")
    rows = [
        Delivery.objects.create(event=event, webhook=webhook, lease_token="a-worker")
        for webhook in webhooks
    ]
    recorder = delivery.Recorder("a-worker")
    for row, webhook in zip(rows, webhooks, strict=True):
        recorder.add_result(row, webhook, None, ConnectionRefusedError("refused"))
    return rows, recorder


@pytest.mark.django_db(transaction=True)
def test_an_outcome_whose_row_went_with_its_webhook_is_written_without_it():
    """Written later, its attempt failed the write on the foreign key, and the worker kept
    it to write first at every claim after."""
    gone, kept = WebhookFactory(), WebhookFactory()
    (_, kept_row), recorder = leased_and_failed(gone, kept)
    gone.delete()

    assert recorder.flush() == 2

    assert list(DeliveryAttempt.objects.values_list("delivery_id", flat=True)) == [kept_row.pk]
    assert Delivery.objects.get().attempts == 1


@pytest.mark.django_db(transaction=True)
def test_an_outcome_of_a_row_another_worker_took_over_keeps_its_attempt():
    """The request was made: its attempt is recorded, the row is the new holder's."""
    (row,), recorder = leased_and_failed(WebhookFactory())
    Delivery.objects.filter(pk=row.pk).update(lease_token="the-new-holder")

    assert recorder.flush() == 1

    assert DeliveryAttempt.objects.get().delivery_id == row.pk
    assert Delivery.objects.get().lease_token == "the-new-holder"


@pytest.mark.django_db(transaction=True)
def test_deleting_a_webhook_waits_for_an_outcome_being_written():
    webhook = WebhookFactory()
    _, recorder = leased_and_failed(webhook)

    assert delete_while_a_worker_writes(recorder.write, webhook.delete) == []
    assert not Webhook.objects.exists()
    assert not DeliveryAttempt.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_claim_writing_failures_first_waits_for_the_claim_lock_before_locking_rows():
    """A deletion takes the claim lock, then the webhook's leased rows: a claim that locked
    those rows (writing their outcomes) before waiting for the claim lock would deadlock."""
    webhook = WebhookFactory()
    (row,), recorder = leased_and_failed(webhook)
    errors: list[BaseException] = []

    def claim():
        try:
            claims.claim(
                "a-worker",
                claims.Capacity(total=10, retry=5),
                using="default",
                fan_out_limit=10,
                recorder=recorder,
            )
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    worker = threading.Thread(target=claim)
    try:
        with transaction.atomic():
            sql.lock("default", CLAIM_LOCK)  # as a deletion does first
            worker.start()
            time.sleep(0.5)
            assert worker.is_alive()
            # As the deletion does next; a row the claim had locked would refuse at once.
            locked = Delivery.objects.select_for_update(nowait=True).filter(pk=row.pk)
            assert list(locked.values_list("pk", flat=True)) == [row.pk]
    finally:
        worker.join(10)

    assert errors == []
    assert DeliveryAttempt.objects.get().delivery_id == row.pk


def test_every_webhook_is_deleted_only_by_asking_for_all_of_them():
    WebhookFactory()
    with pytest.raises(AttributeError):
        Webhook.objects.delete()  # as on any Django manager
    assert Webhook.objects.all().delete()[1]["webhooks_app.Webhook"] == 1
