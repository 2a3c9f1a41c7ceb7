"""Queue glue: batching, leases, the dispatcher, and recovery of lost queue messages."""

import datetime

import pytest
import time_machine
from django.db import transaction
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import Schedule

from tests.factories import ArticleFactory
from webhooks_app import tasks
from webhooks_app.models import Delivery, Lease

pytestmark = [pytest.mark.django_db, pytest.mark.portable]


@pytest.fixture
def lost_messages(monkeypatch):
    """Enqueued deliveries vanish, as a queue message lost to a crash or a flushed Redis."""
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


def test_lost_queue_message_is_found_again_by_the_dispatcher(
    webhook, receiver, lost_messages, django_capture_on_commit_callbacks, monkeypatch
):
    start = timezone.now()
    with time_machine.travel(start, tick=False), django_capture_on_commit_callbacks(execute=True):
        ArticleFactory()
    assert [func for func, _ in lost_messages] == [tasks.DELIVER_TASK]
    monkeypatch.undo()

    # Until the lease runs out the rows belong to the message that was lost...
    with time_machine.travel(start + datetime.timedelta(seconds=44), tick=False):
        assert tasks.dispatch_once() == 0
    # ...then the dispatcher hands them out again, and they are delivered.
    with time_machine.travel(start + datetime.timedelta(seconds=46), tick=False):
        assert tasks.dispatch_once() == 1

    assert len(receiver.wait_for(1)) == 1
    assert Delivery.objects.get().status == "succeeded"


def test_a_due_row_is_claimed_once(webhook, lost_messages, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        ArticleFactory()
    later = timezone.now() + datetime.timedelta(minutes=5)

    first_token, first = tasks.claim_due(later, limit=10)
    second_token, second = tasks.claim_due(later, limit=10)

    assert len(first) == 1
    assert second == []
    assert Delivery.objects.get().lease_token == first_token != second_token


def test_one_transaction_becomes_batches_of_batch_size(
    webhook, queued, settings, django_capture_on_commit_callbacks
):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "BATCH_SIZE": 50, "QUEUE": "webhooks"}
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        ArticleFactory.create_batch(120)

    deliver_calls = [call for call in queued if call[0] == tasks.DELIVER_TASK]
    assert [len(args[0]) for _, args, _ in deliver_calls] == [50, 50, 20]
    assert {kwargs["cluster"] for _, _, kwargs in deliver_calls} == {"webhooks"}
    assert all(kwargs["save"] is False for _, _, kwargs in deliver_calls)


def test_broker_failure_does_not_reach_the_caller(
    webhook, monkeypatch, django_capture_on_commit_callbacks, caplog
):
    def broker_down(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr("webhooks_app.tasks.async_task", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        ArticleFactory()

    assert "the dispatcher will retry them" in caplog.text
    row = Delivery.objects.get()
    assert row.status == "pending"
    assert row.lease_token


def test_deliver_batch_never_raises(monkeypatch):
    def explode(ids, token):
        raise RuntimeError("database went away")

    monkeypatch.setattr("webhooks_app.delivery.deliver", explode)

    assert tasks.deliver_batch([1, 2], "token") == 0


def test_dispatcher_loop_holds_a_lease_and_chains_itself(monkeypatch, lost_messages):
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr("webhooks_app.tasks._broker", lambda: FakeBroker())
    sleeps = []

    result = tasks.run_dispatcher(run_seconds=0.05, sleep=lambda seconds: sleeps.append(seconds))

    assert result.startswith("dispatched")
    assert sleeps
    assert set(sleeps) == {1.0}
    assert lost_messages[-1][0] == tasks.DISPATCH_TASK
    assert not tasks.dispatcher_running()


def test_only_one_dispatcher_runs_at_a_time(monkeypatch, lost_messages):
    monkeypatch.setattr(Conf, "SYNC", False)
    Lease.objects.create(
        name=tasks.DISPATCHER_LEASE,
        owner="another-cluster",
        expires_at=timezone.now() + datetime.timedelta(seconds=5),
    )

    assert tasks.run_dispatcher(run_seconds=0.05) == "another dispatcher is running"
    assert lost_messages == []


def test_kick_starts_a_missing_dispatcher_once(monkeypatch, lost_messages):
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(tasks, "_last_kick", 0.0)

    tasks.kick_dispatcher()
    tasks.kick_dispatcher()  # throttled: no second look within KICK_INTERVAL_SECONDS

    assert [func for func, _ in lost_messages] == [tasks.DISPATCH_TASK]


def test_sync_mode_never_loops(lost_messages):
    assert Conf.SYNC is True
    assert tasks.run_dispatcher() == "sync mode: not looping"


def test_dispatcher_waits_while_the_queue_is_backed_up(
    webhook, monkeypatch, lost_messages, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        ArticleFactory()
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr("webhooks_app.tasks._broker", lambda: FakeBroker(size=100))
    lease_ends = Delivery.objects.get().next_attempt_at

    with time_machine.travel(lease_ends + datetime.timedelta(seconds=30), tick=False):
        assert tasks.dispatch_once() == 0
    # A queue kept busy by other tasks must not hold a delivery back for ever.
    with time_machine.travel(lease_ends + datetime.timedelta(seconds=46), tick=False):
        assert tasks.dispatch_once() == 1


def test_migrate_installs_the_dispatcher_schedule():
    schedule = Schedule.objects.get(name=tasks.SCHEDULE_NAME)

    assert schedule.func == tasks.DISPATCH_TASK
    assert schedule.schedule_type == Schedule.MINUTES
    assert schedule.minutes == 1
    assert schedule.repeats == -1


def test_schedule_follows_the_queue_setting(settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "QUEUE": "webhooks"}
    tasks.ensure_schedule()

    assert Schedule.objects.get(name=tasks.SCHEDULE_NAME).cluster == "webhooks"


class FakeBroker:
    def __init__(self, size=0):
        self.size = size

    def queue_size(self):
        return self.size
