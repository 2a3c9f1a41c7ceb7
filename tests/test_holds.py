"""Holding back a webhook's new events while its queue is deep (holds.py), on both databases:
what it is owed is made into deliveries later, oldest first, and nothing is lost."""

import datetime
import io
import threading
import time

import pytest
import time_machine
from django.core.management import call_command
from django.db import connections, transaction
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import ArticleFactory, WebhookFactory
from tests.receiver import Response
from webhooks_app import claims, engine, holds, sql, tasks
from webhooks_app.models import (
    DECLARED_INACTIVE_REASON,
    Delivery,
    DeliveryStatus,
    Event,
    HeldFanout,
    Webhook,
)

pytestmark = [pytest.mark.django_db, pytest.mark.portable]

DEPTH = 5


@pytest.fixture(autouse=True)
def shallow(monkeypatch):
    """A depth of five rows (the least is a hundred), so a few events make a deep queue,
    and any request out counts as slow (but in the test of that rule)."""
    monkeypatch.setattr(holds, "MIN_DEPTH", DEPTH)
    monkeypatch.setattr(holds, "SLOW_SECONDS", 0.0)


@pytest.fixture(params=[True, False], ids=["hand-written-sql", "orm"])
def statements(request, monkeypatch):
    if not request.param:
        monkeypatch.setattr(sql, "supported", lambda using: False)
    return request.param


@pytest.fixture
def slow():
    """An endpoint with one request in flight at most: its queue deepens at once."""
    return WebhookFactory(max_in_flight=1)


def claim(holder="a-worker", total=50, **kwargs):
    return claims.claim(
        holder,
        claims.Capacity(total=total, retry=25),
        using="default",
        fan_out_limit=200,
        **kwargs,
    )


def events_of(webhook):
    return list(
        Delivery.objects.filter(webhook=webhook)
        .order_by("event_id")
        .values_list("event_id", flat=True)
    )


def deepen(webhook):
    """Nine rows for ``webhook``, one of them out: its next events are held back."""
    ArticleFactory.create_batch(8)
    claim()  # one out, seven waiting: deep, but nothing was out when the claim began
    ArticleFactory()
    claim()
    assert len(events_of(webhook)) == 9
    assert HeldFanout.objects.get().webhook_id == webhook.pk


def owed_now():
    """The ids of the events the one hold covers."""
    batches = HeldFanout.objects.get().from_batch
    return set(Event.objects.filter(fanout_batch__gte=batches).values_list("id", flat=True))


def settle(webhook):
    """The webhook's requests all answered: its queue is empty again."""
    Delivery.objects.filter(webhook=webhook).update(
        status=DeliveryStatus.SUCCEEDED, lease_token="", next_attempt_at=None
    )


def test_a_deep_queue_holds_back_the_webhooks_next_events(statements, slow):
    fast = WebhookFactory()
    ArticleFactory.create_batch(8)
    claim()
    assert not HeldFanout.objects.exists()  # deep, but nothing was out yet
    ArticleFactory()

    claim()

    (hold,) = HeldFanout.objects.all()
    assert hold.webhook_id == slow.pk
    second_batch = Event.objects.order_by("-fanout_batch").values_list("fanout_batch", flat=True)[0]
    assert hold.from_batch == second_batch + 1

    ArticleFactory.create_batch(4)
    claim()

    assert len(events_of(fast)) == 13
    assert len(events_of(slow)) == 9  # the four new events wait as events
    assert set(Event.objects.values_list("fanout_batch", flat=True)) == {
        second_batch - 1,
        second_batch,
        second_batch + 1,
    }


def test_between_sweeps_events_only_a_held_full_webhook_is_owed_are_still_fanned_out(slow):
    """A claim that finds every endpoint full leaves new events pending, as their rows
    would be due rows, written twice; a held webhook gets no rows from a fan-out, so what
    only it subscribes to is taken (owed) as before, and counted in its backlog."""
    deepen(slow)
    ArticleFactory.create_batch(2)

    assert claim(webhooks={slow.pk: slow}, blocked=set(), sweep=False) == []

    assert not Event.objects.filter(pending_fanout=True).exists()
    assert len(events_of(slow)) == 9
    assert len(owed_now()) == 2


def test_only_an_endpoint_with_a_request_out_for_a_while_is_held_back(monkeypatch):
    monkeypatch.setattr(holds, "SLOW_SECONDS", 0.5)
    serial = WebhookFactory(max_in_flight=1)
    ArticleFactory.create_batch(8)
    claim()
    ArticleFactory()
    claim()
    assert not HeldFanout.objects.exists()  # deep, but its request went out just now

    with time_machine.travel(timezone.now() + datetime.timedelta(seconds=1), tick=False):
        ArticleFactory()
        claim()

    assert HeldFanout.objects.get().webhook_id == serial.pk


def test_a_held_webhook_gets_what_it_is_owed_once_its_queue_runs_short(statements, slow):
    deepen(slow)
    ArticleFactory.create_batch(2)
    claim()
    ArticleFactory.create_batch(2)
    claim()
    assert len(events_of(slow)) == 9
    assert claim() == []  # still deep: nothing is released, nothing sent
    owed = owed_now()

    settle(slow)
    (item,) = claim(total=1)

    # Both owed batches fit in its depth: made at once, due as their events happened, and
    # the oldest is sent first. Caught up, it is held no more.
    made = Delivery.objects.filter(webhook=slow, event_id__in=owed)
    assert sorted(made.values_list("event_id", flat=True)) == sorted(owed)
    assert item.delivery.event_id == Event.objects.filter(id__in=owed).earliest("created_at").id
    assert all(
        row.next_attempt_at == row.event.created_at for row in made.exclude(pk=item.delivery.pk)
    )
    assert not HeldFanout.objects.exists()

    ArticleFactory()
    claim()
    assert len(events_of(slow)) == 14  # not held any more: its row is made at once
    assert len(set(events_of(slow))) == 14


def test_a_release_stops_at_the_depth_and_the_hold_moves_on(slow):
    deepen(slow)
    for _ in range(3):
        ArticleFactory.create_batch(2)
        claim()
    batches = sorted(set(Event.objects.values_list("fanout_batch", flat=True)))
    settle(slow)

    with transaction.atomic():
        claims.fan_out(timezone.now(), limit=1, using="default")  # a fan-out releases nothing
    assert len(events_of(slow)) == 9
    claim(total=1)

    # Room for five: two whole batches of two (a third would pass the depth).
    assert len(events_of(slow)) == 9 + 4
    assert HeldFanout.objects.get().from_batch == batches[4]


def test_an_event_that_commits_late_is_still_owed(slow):
    deepen(slow)
    # Written long ago, committed only now: fanned out in a later batch, whatever its time.
    late = Event.objects.create(
        name="article.create",
        model="tests.article",
        body="{}",
        created_at=timezone.now() - datetime.timedelta(hours=1),
        pending_fanout=True,
    )
    claim()
    assert late.id not in events_of(slow)

    settle(slow)
    claim()

    assert late.id in events_of(slow)
    assert not HeldFanout.objects.exists()


def test_a_disabled_held_webhook_gets_what_it_is_owed_as_skipped(statements, slow):
    deepen(slow)
    ArticleFactory.create_batch(3)
    claim()
    slow.is_active = False
    slow.disabled_reason = "Disabled by an operator."
    slow.save()

    owed = owed_now()
    skipped = Delivery.objects.filter(
        webhook=slow, event_id__in=owed, status=DeliveryStatus.SKIPPED
    )
    settle(slow)  # its request is back: not at its cap any more
    # Between sweeps, nothing: a webhook disabled after a long outage is owed millions.
    copy = {webhook.pk: webhook for webhook in Webhook.objects.all()}
    claim(webhooks=copy, sweep=False, probe=False)
    assert not skipped.exists()

    claim()

    assert skipped.count() == len(owed) == 3
    assert {row.last_error for row in skipped} == {"Skipped: Disabled by an operator."}
    assert not HeldFanout.objects.exists()


def test_a_held_webhook_is_owed_only_the_events_it_subscribes_to(slow):
    deepen(slow)
    slow.events = ["article.update"]
    slow.save()
    ArticleFactory.create_batch(2)  # creates: not subscribed any more
    claim()

    settle(slow)
    claim()

    assert len(events_of(slow)) == 9
    assert not HeldFanout.objects.exists()


def test_a_probe_finds_a_held_webhook_once_its_queue_is_shorter_than_its_depth(slow):
    deepen(slow)
    ArticleFactory.create_batch(2)
    claim()
    now = timezone.now() + datetime.timedelta(hours=1)  # every row due: only the hold counts
    Delivery.objects.filter(webhook=slow).update(status=DeliveryStatus.SUCCEEDED)
    (kept,) = Delivery.objects.filter(webhook=slow)[:1]
    Delivery.objects.filter(webhook=slow).exclude(pk=kept.pk).update(
        status=DeliveryStatus.PENDING, next_attempt_at=now + datetime.timedelta(days=1)
    )

    assert not claims.rows_waiting(now, using="default", webhooks={slow.pk: DEPTH})
    assert not claims.rows_waiting(now, using="default")  # a sweep finds it deep too
    Delivery.objects.filter(webhook=slow, status=DeliveryStatus.PENDING).update(
        status=DeliveryStatus.FAILED
    )
    assert claims.rows_waiting(now, using="default", webhooks={slow.pk: DEPTH})
    assert not claims.rows_waiting(now, using="default", webhooks={})
    assert claims.rows_waiting(now, using="default")  # a sweep looks at every hold


def test_the_prune_keeps_the_events_a_held_webhook_is_owed(slow):
    deepen(slow)
    ArticleFactory.create_batch(2)
    claim()
    owed = set(
        Event.objects.filter(fanout_batch=HeldFanout.objects.get().from_batch).values_list(
            "id", flat=True
        )
    )
    Delivery.objects.all().delete()
    Event.objects.update(created_at=timezone.now() - datetime.timedelta(days=400))

    out = io.StringIO()
    call_command("webhooks_prune", "--failed-age", "30d", "--succeeded-age", "30d", stdout=out)

    assert "and 9 events." in out.getvalue()
    assert set(Event.objects.values_list("id", flat=True)) == owed

    slow.delete()  # the hold goes with its webhook; nobody is owed them any more
    assert not HeldFanout.objects.exists()
    call_command("webhooks_prune", "--failed-age", "30d", "--succeeded-age", "30d", stdout=out)
    assert not Event.objects.exists()


def test_batch_numbers_never_go_back_below_a_hold(slow):
    HeldFanout.objects.create(webhook=slow, from_batch=50)  # its events were all pruned

    assert sql.next_fanout_batch("default") == 50
    ArticleFactory()
    with transaction.atomic():
        claims.fan_out(timezone.now(), limit=10, using="default")

    assert Event.objects.get().fanout_batch == 50
    assert events_of(slow) == []  # owed, as from_batch says


def test_the_webhook_page_says_it_is_held_back_and_how_many_events_wait(admin_client, slow):
    page = reverse("admin:webhooks_app_webhook_change", args=[slow.pk])
    assert "Its queue has been deep" not in admin_client.get(page).content.decode()
    deepen(slow)
    ArticleFactory.create_batch(3)
    claim()

    content = admin_client.get(page).content.decode()

    assert "Its queue has been deep since" in content
    assert ": 3 events fanned out since then wait as events" in content


def test_the_metrics_say_how_long_each_webhook_has_been_held_back(client, slow):
    slow.name = "slow one"
    slow.save()
    deepen(slow)
    HeldFanout.objects.update(held_at=timezone.now() - datetime.timedelta(minutes=2))

    families = text_string_to_metric_families(client.get("/metrics/").content.decode())
    (held,) = [family.samples for family in families if family.name == "webhooks_held_back_seconds"]

    ((labels, seconds),) = [(sample.labels, sample.value) for sample in held]
    assert labels == {"webhook_id": str(slow.pk), "webhook": "slow one"}
    assert 120 <= seconds < 130


@pytest.mark.django_db(transaction=True)
def test_a_held_endpoint_gets_every_event_once_through_real_runs(receiver, monkeypatch):
    """Runs on a worker thread, events committed one by one while the endpoint answers in
    a quarter of a second, one request at a time: it is held back, then fed from what it is
    owed, and every event reaches it exactly once."""
    receiver.default = Response(200, delay=0.25)
    WebhookFactory(url=receiver.url, max_in_flight=1)
    # Committed for the worker's thread to see, without the inline run each commit starts.
    monkeypatch.setattr(tasks, "wake", lambda **kwargs: None)
    stop = threading.Event()

    def work():
        try:
            while not stop.is_set():
                engine.Run(budget=0.5, linger=0).run()
        finally:
            connections.close_all()

    worker = threading.Thread(target=work)
    worker.start()
    held_seen = False
    try:
        for _ in range(20):
            ArticleFactory()
            held_seen = held_seen or HeldFanout.objects.exists()
            time.sleep(0.05)
        receiver.wait_for(20, timeout=30)
        time.sleep(0.5)  # anything sent twice would be in by now
    finally:
        stop.set()
        worker.join(15)

    assert held_seen
    sent = sorted(request.json["id"] for request in receiver.requests)
    assert sent == sorted(Event.objects.values_list("id", flat=True))
    assert not HeldFanout.objects.exists()
    assert set(Delivery.objects.values_list("status", flat=True)) == {DeliveryStatus.SUCCEEDED}


def test_a_held_webhook_disabled_gets_its_new_events_skipped_at_once_and_nothing_twice(slow):
    deepen(slow)
    ArticleFactory.create_batch(3)
    claim()  # owed
    slow.is_active = False
    slow.disabled_reason = "Disabled by an operator."
    slow.save()
    copy = {webhook.pk: webhook for webhook in Webhook.objects.all()}
    ArticleFactory.create_batch(2)

    claim(webhooks=copy, sweep=False)  # no sweep: nothing owed is made; the new get rows

    assert HeldFanout.objects.get().until_batch is not None
    newest = Event.objects.order_by("-fanout_batch")[:2]
    assert {row.status for row in Delivery.objects.filter(event__in=newest, webhook=slow)} == {
        DeliveryStatus.SKIPPED
    }
    slow.is_active = True  # re-enabled before a sweep made the owed ones skipped
    slow.disabled_reason = ""
    slow.save()
    settle(slow)
    ArticleFactory()
    claim()  # its own new row at once, and the owed ones, due, as its queue has room

    assert not HeldFanout.objects.exists()
    assert sorted(events_of(slow)) == sorted(Event.objects.values_list("id", flat=True))


def test_a_held_webhook_deactivated_in_settings_gets_nothing_new(slow):
    deepen(slow)
    ArticleFactory.create_batch(3)
    claim()
    owed = owed_now()
    Webhook.objects.filter(pk=slow.pk).update(
        is_active=False, managed_by_settings=True, disabled_reason=DECLARED_INACTIVE_REASON
    )
    copy = {webhook.pk: webhook for webhook in Webhook.objects.all()}
    ArticleFactory.create_batch(2)
    claim(webhooks=copy, sweep=False)

    claim()  # a sweep: what it was owed while it received becomes skipped, as rows would

    made = Delivery.objects.filter(webhook=slow, event_id__in=Event.objects.values("id"))
    assert (
        set(made.filter(status=DeliveryStatus.SKIPPED).values_list("event_id", flat=True)) >= owed
    )
    assert made.count() == 9 + len(owed)  # nothing for the two events after it was removed
    assert not HeldFanout.objects.exists()


def test_retries_waiting_do_not_keep_a_held_webhooks_new_events_waiting(slow):
    deepen(slow)
    ArticleFactory.create_batch(2)
    claim()
    owed = owed_now()
    # Every row it has failed once and waits an hour for its retry: nine pending rows, but
    # no first attempt.
    Delivery.objects.filter(webhook=slow).update(
        lane="retry",
        attempts=1,
        lease_token="",
        next_attempt_at=timezone.now() + datetime.timedelta(hours=1),
    )

    taken = claim()

    assert owed <= set(events_of(slow))
    assert {item.delivery.event_id for item in taken} <= owed
    assert not HeldFanout.objects.exists()
