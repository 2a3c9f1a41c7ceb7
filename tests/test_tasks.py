"""Queue glue: wake-ups, the engine's task, the ticker, and recovery of lost queue messages."""

import datetime

import pytest
import time_machine
from django.db import transaction
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import Schedule

from tests.factories import ArticleFactory
from tests.receiver import Response
from webhooks_app import claims, engine, tasks
from webhooks_app.models import Delivery, Event, Lease

pytestmark = [pytest.mark.django_db, pytest.mark.portable]


@pytest.fixture
def lost_messages(monkeypatch):
    """Enqueued wake-ups vanish, as a queue message lost to a crash or a flushed Redis."""
    lost = []
    monkeypatch.setattr(
        "webhooks_app.tasks._enqueue", lambda func, *args: lost.append((func, args))
    )
    return lost


@pytest.fixture
def queued(monkeypatch):
    """Capture what reaches django-q2, with the options it was given."""
    calls = []

    def fake_async_task(func, *args, **kwargs):
        calls.append((func, args, kwargs))

    monkeypatch.setattr("webhooks_app.tasks.async_task", fake_async_task)
    return calls


class FakeBroker:
    def __init__(self, size=0):
        self.size = size

    def queue_size(self):
        return self.size


def test_a_lost_wake_up_is_found_again_by_the_ticker(
    webhook, receiver, lost_messages, django_capture_on_commit_callbacks, monkeypatch
):
    with django_capture_on_commit_callbacks(execute=True):
        ArticleFactory()
    assert [func for func, _ in lost_messages] == [tasks.RUN_TASK]
    assert receiver.requests == []
    monkeypatch.undo()

    # No lease to wait for: the event is in the database, due, and the next tick wakes a
    # worker for it.
    assert tasks.tick() is True
    assert len(receiver.wait_for(1)) == 1
    assert Delivery.objects.get().status == "succeeded"
    assert tasks.tick() is False


def test_wake_ups_go_to_the_configured_cluster_without_storing_results(
    webhook, queued, settings, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(tasks, "_last_wake", 0.0)
    settings.WEBHOOKS = {**settings.WEBHOOKS, "QUEUE": "webhooks"}
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        ArticleFactory.create_batch(120)

    # 120 commits' worth of events, one wake-up: the rest were coalesced into it.
    assert [(func, args) for func, args, _ in queued] == [(tasks.RUN_TASK, ())]
    assert queued[0][2]["cluster"] == "webhooks"
    assert queued[0][2]["save"] is False


def test_broker_failure_does_not_reach_the_caller(
    webhook, receiver, monkeypatch, django_capture_on_commit_callbacks, caplog
):
    def broker_down(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr("webhooks_app.tasks.async_task", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        ArticleFactory()

    assert "the ticker will find the deliveries" in caplog.text
    assert Event.objects.get().pending_fanout is True
    monkeypatch.undo()
    assert tasks.tick() is True
    assert Delivery.objects.get().status == "succeeded"


def test_a_due_row_is_claimed_once(webhook, receiver):
    ArticleFactory()
    capacity = claims.Capacity(total=10, retry=5)

    first = claims.claim("first", capacity, using="default", fan_out_limit=10)
    second = claims.claim("second", capacity, using="default", fan_out_limit=10)

    assert len(first) == 1
    assert second == []
    assert Delivery.objects.get().lease_token == "first"


def test_run_never_raises(monkeypatch, caplog):
    def explode(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr("webhooks_app.engine.Run.run", explode)

    assert tasks.run() == 0
    assert "a delivery run failed" in caplog.text


def test_messages_of_earlier_versions_are_wake_ups(webhook, receiver):
    ArticleFactory()

    # deliver_batch(ids, lease_token) was the task before the engine claimed rows itself.
    assert tasks.deliver_batch([1, 2], "an-old-token") == 1
    assert len(receiver.requests) == 1


def test_a_run_that_stops_with_work_left_asks_for_another(
    webhook, receiver, monkeypatch, lost_messages, settings
):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "MAX_IN_FLIGHT": 1, "TASK_SECONDS": 0.5}
    receiver.default = Response(200, delay=0.2)
    for _ in range(6):
        ArticleFactory()
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(tasks, "start_ticker", lambda: None)
    monkeypatch.setattr(engine, "LINGER_SECONDS", 0.0)

    sent = tasks.run()

    assert 1 <= sent < 6
    assert Delivery.objects.filter(status="pending").count() == 6 - sent
    assert [func for func, _ in lost_messages] == [tasks.RUN_TASK]


def test_the_ticker_wakes_only_when_work_is_waiting(webhook, monkeypatch, lost_messages):
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(tasks, "start_ticker", lambda: None)
    monkeypatch.setattr("webhooks_app.tasks._broker", lambda: FakeBroker(size=0))
    monkeypatch.setattr(tasks, "_last_tick_wake", 0.0)

    assert tasks.tick() is False
    ArticleFactory()
    assert tasks.tick() is True
    assert [func for func, _ in lost_messages] == [tasks.RUN_TASK]


def test_the_ticker_adds_nothing_to_a_busy_queue_but_never_waits_for_ever(
    webhook, monkeypatch, lost_messages
):
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(tasks, "start_ticker", lambda: None)
    monkeypatch.setattr("webhooks_app.tasks._broker", lambda: FakeBroker(size=100))
    ArticleFactory()
    monkeypatch.setattr(tasks, "_last_tick_wake", 0.0)
    assert tasks.tick() is True  # the first look after a long while wakes regardless

    # A wake-up is presumably waiting behind the host's tasks: no second one yet...
    assert tasks.tick() is False
    # ...but a queue kept busy by other tasks must not hold a delivery back for ever.
    monkeypatch.setattr(
        tasks, "_last_tick_wake", tasks._last_tick_wake - tasks.TICK_WAKE_AT_LEAST_EVERY_SECONDS
    )
    assert tasks.tick() is True
    assert len(lost_messages) == 2


def test_retries_coming_due_are_found_by_the_ticker(webhook, receiver, monkeypatch):
    receiver.queue(Response(500))
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        ArticleFactory()
        tasks.run()
    row = Delivery.objects.get()
    assert row.status == "pending"

    with time_machine.travel(row.next_attempt_at - datetime.timedelta(seconds=0.1), tick=False):
        assert tasks.tick() is False
    with time_machine.travel(row.next_attempt_at, tick=False):
        assert tasks.tick() is True
    row.refresh_from_db()
    assert row.status == "succeeded"


def test_only_one_ticker_holds_the_lease():
    assert Lease.objects.acquire(tasks.TICKER_LEASE, "cluster-a", 5) is True
    assert Lease.objects.acquire(tasks.TICKER_LEASE, "cluster-b", 5) is False
    assert Lease.objects.acquire(tasks.TICKER_LEASE, "cluster-a", 5) is True  # renewed
    assert tasks.ticker_running() is True

    with time_machine.travel(timezone.now() + datetime.timedelta(seconds=6)):
        assert tasks.ticker_running() is False
        assert Lease.objects.acquire(tasks.TICKER_LEASE, "cluster-b", 5) is True

    Lease.objects.release(tasks.TICKER_LEASE, "cluster-b")
    assert tasks.ticker_running() is False


def test_sync_mode_starts_no_ticker_thread(monkeypatch):
    assert Conf.SYNC is True
    started = []
    monkeypatch.setattr(tasks._Ticker, "start", lambda self: started.append(self))

    tasks.start_ticker()
    tasks.on_worker_spawn()

    assert started == []


def test_a_worker_process_starts_one_ticker_thread(monkeypatch):
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(tasks, "_ticker", None)
    started = []

    def fake_start(self):
        started.append(self)

    monkeypatch.setattr(tasks._Ticker, "start", fake_start)
    monkeypatch.setattr(tasks._Ticker, "is_alive", lambda self: True)

    tasks.on_worker_spawn()
    tasks.start_ticker()

    assert len(started) == 1


def test_migrate_installs_the_ticker_schedule():
    schedule = Schedule.objects.get(name=tasks.SCHEDULE_NAME)

    assert schedule.func == tasks.TICK_TASK
    assert schedule.schedule_type == Schedule.MINUTES
    assert schedule.minutes == 1
    assert schedule.repeats == -1


def test_schedule_follows_the_queue_setting(settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "QUEUE": "webhooks"}
    tasks.ensure_schedule()

    assert Schedule.objects.get(name=tasks.SCHEDULE_NAME).cluster == "webhooks"


def test_the_schedule_of_an_earlier_version_is_replaced():
    Schedule.objects.create(
        name="webhooks_app.dispatcher",
        func="webhooks_app.tasks.run_dispatcher",
        schedule_type=Schedule.MINUTES,
        minutes=1,
    )
    tasks.ensure_schedule()

    assert list(Schedule.objects.values_list("func", flat=True)) == [tasks.TICK_TASK]
