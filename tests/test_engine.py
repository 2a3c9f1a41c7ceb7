"""The engine in-process: concurrency, caps, lanes, rate limits, deadlines, isolation.

Runs are started the way a worker starts them (``tasks.run``, inline in the suite) against
real servers on 127.0.0.1: the suite's receiver and the misbehaving ones in tests/hostile.py.
"""

import asyncio
import datetime
import itertools
import threading
import time

import pytest
import time_machine
from django.db import DatabaseError, connections, transaction
from django.utils import timezone

from tests.factories import ArticleFactory, WebhookFactory
from tests.hostile import HostileReceiver
from tests.receiver import Response
from webhooks_app import claims, delivery, engine, http, sql, tasks
from webhooks_app.models import (
    DECLARED_INACTIVE_REASON,
    Delivery,
    DeliveryAttempt,
    Event,
    Lane,
    RateLimitState,
    Webhook,
)

pytestmark = [pytest.mark.django_db, pytest.mark.portable]


@pytest.fixture
def hostile():
    servers = []

    def start(mode):
        server = HostileReceiver(mode)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def claim(holder="a-worker", total=50, retry=25, **kwargs):
    return claims.claim(
        holder,
        claims.Capacity(total=total, retry=retry),
        using="default",
        fan_out_limit=200,
        **kwargs,
    )


@pytest.fixture(params=[True, False], ids=["hand-written-sql", "orm"])
def statements(request, monkeypatch):
    """Run a test with the engine's hand-written SQL and with its ORM fallback (used on
    databases other than PostgreSQL and SQLite >= 3.35)."""
    if not request.param:
        monkeypatch.setattr(sql, "supported", lambda using: False)
    return request.param


def test_many_concurrent_sends_record_every_attempt_once(receiver, statements):
    WebhookFactory(url=receiver.url)
    receiver.default = Response(200, delay=0.05)
    ArticleFactory.create_batch(60)

    started = time.monotonic()
    assert tasks.run() == 60
    elapsed = time.monotonic() - started

    assert len(receiver.requests) == 60
    assert len({r.header("webhook-id") for r in receiver.requests}) == 60
    assert receiver.max_active > 1  # sent at once, not one after another
    assert Delivery.objects.filter(status="succeeded", attempts=1).count() == 60
    assert DeliveryAttempt.objects.count() == 60
    assert elapsed < 60 * 0.05  # one at a time would take at least this long


def test_an_endpoints_cap_bounds_its_requests_in_flight(receiver):
    WebhookFactory(url=receiver.url, max_in_flight=3)
    receiver.default = Response(200, delay=0.2)
    ArticleFactory.create_batch(12)

    assert tasks.run() == 12
    assert receiver.max_active == 3


def test_a_claim_counts_what_other_workers_hold(statements, webhook):
    webhook.max_in_flight = 5
    webhook.save()
    ArticleFactory.create_batch(8)

    first = claim("worker-a")
    second = claim("worker-b")

    assert len(first) == 5
    assert second == []  # the other worker's five are in flight
    assert Delivery.objects.filter(lease_token="worker-a").count() == 5
    assert Delivery.objects.filter(lease_token="", status="pending").count() == 3


def test_retries_never_take_the_slots_first_attempts_need(statements, webhook, settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "RETRY_SHARE": 0.5}
    webhook.max_in_flight = 4
    webhook.save()
    event = Event.objects.create(name="create", body="{}")
    now = timezone.now()
    for lane in (Lane.RETRY, Lane.FIRST):
        Delivery.objects.bulk_create(
            Delivery(event=event, webhook=webhook, lane=lane, next_attempt_at=now, attempts=1)
            for _ in range(10)
        )

    taken = claim()
    assert sorted(item.delivery.lane for item in taken) == ["first", "first", "retry", "retry"]


def test_retries_borrow_what_first_attempts_leave(webhook):
    webhook.max_in_flight = 4
    webhook.save()
    event = Event.objects.create(name="create", body="{}")
    Delivery.objects.bulk_create(
        Delivery(event=event, webhook=webhook, lane=Lane.RETRY, next_attempt_at=timezone.now())
        for _ in range(10)
    )

    assert [item.delivery.lane for item in claim()] == ["retry"] * 4


def test_a_recovery_backlog_does_not_hold_up_new_events(
    receiver, django_capture_on_commit_callbacks
):
    hook = WebhookFactory(url=receiver.url, max_in_flight=2)
    event = Event.objects.create(name="create", body='{"old": true}')
    Delivery.objects.bulk_create(
        Delivery(
            event=event,
            webhook=hook,
            lane=Lane.RETRY,
            attempts=1,
            max_attempts=2,
            next_attempt_at=timezone.now() - datetime.timedelta(minutes=5),
        )
        for _ in range(20)
    )
    receiver.default = Response(200, delay=0.05)
    ArticleFactory()

    tasks.run()
    order = [request.json.get("event") for request in receiver.requests]
    # The new event went out among the first requests, not after the twenty retries.
    assert "create" in order[:4]
    assert len(order) == 21


def test_a_rate_limited_endpoint_gets_spaced_slots(statements, webhook):
    webhook.rate_limit = 2
    webhook.save()
    ArticleFactory.create_batch(10)

    first = claim()
    # The next second's slots, half a second apart; the rest wait (they stay due).
    assert len(first) == 3
    gaps = [
        (later.send_at - earlier.send_at).total_seconds()
        for earlier, later in itertools.pairwise(first)
    ]
    assert gaps == [0.5, 0.5]
    assert claim("worker-b") == []
    assert Delivery.objects.filter(lease_token="", status="pending").count() == 7
    state = RateLimitState.objects.get(webhook=webhook)
    assert state.next_slot_at == first[-1].send_at + datetime.timedelta(seconds=0.5)


def test_a_rate_limit_is_kept_by_the_sends(receiver):
    WebhookFactory(url=receiver.url, rate_limit=10)
    ArticleFactory.create_batch(8)

    assert tasks.run() == 8
    times = [request.received_at for request in receiver.requests]
    # Sends go out at slots 0.1 s apart; arrivals jitter on a busy machine (one request
    # late and the next on time made a 62 ms gap in CI), so each arrival is held to its
    # slot counted from the first, less that jitter, not to the gap before it.
    assert all(at - times[0] > number * 0.1 - 0.03 for number, at in enumerate(times))
    assert 7 / (times[-1] - times[0]) <= 10 * 1.1


@pytest.mark.parametrize(
    ("mode", "phase"),
    [
        ("trickle_headers", "waiting for the response"),
        ("trickle_body", "reading the response body"),
        ("hang", "waiting for the response"),
    ],
)
def test_a_slow_receiver_ends_as_a_recorded_timeout_within_the_deadline(hostile, mode, phase):
    server = hostile(mode)
    WebhookFactory(url=server.url, timeout=1.5)
    ArticleFactory()

    started = time.monotonic()
    tasks.run()
    elapsed = time.monotonic() - started

    attempt = DeliveryAttempt.objects.get()
    assert attempt.error_class == "Timeout"
    assert attempt.error_message == f"Timed out after 1.5 s {phase}"
    assert attempt.duration_ms < 1500 + 2000
    assert elapsed < 1.5 + 2
    row = Delivery.objects.get()
    assert row.status == "pending"  # retried on schedule
    assert row.lane == "retry"
    assert row.next_attempt_at > timezone.now()
    assert row.lease_token == ""


@pytest.mark.django_db(transaction=True)
def test_a_hanging_endpoint_does_not_delay_another(receiver, hostile, monkeypatch):
    hanging = hostile("hang")
    WebhookFactory(url=hanging.url, timeout=5)
    WebhookFactory(url=receiver.url)
    # Committed for the worker's thread to see, without the inline run each commit starts.
    monkeypatch.setattr(tasks, "wake", lambda **kwargs: None)
    ArticleFactory.create_batch(10)

    committed = time.time()

    def work():
        # A short run: it claims for half a second, then waits out the hanging requests.
        try:
            engine.Run(budget=0.5, linger=0).run()
        finally:
            connections.close_all()

    worker = threading.Thread(target=work)
    worker.start()
    try:
        requests = receiver.wait_for(10, timeout=5)
        assert max(request.received_at for request in requests) - committed < 1.0
    finally:
        worker.join(15)
    assert DeliveryAttempt.objects.filter(error_class="Timeout").count() == 10


def test_outcomes_wait_to_be_written_together_only_for_requests_that_may_end_soon(webhook):
    ArticleFactory()
    (item,) = claim()
    run = engine.Run(budget=5, linger=0)
    run.recorder.add_result(item.delivery, item.webhook, None, RuntimeError("unsendable"))
    now = run.recorder.first_added_at  # the clock the flush reads, however slow this machine
    assert now is not None
    loop = asyncio.new_event_loop()
    loop.close()  # never runs: the request is only counted
    out = engine._InFlight(item, None, http.Started(loop), object(), now + 5, starts_at=now)
    run.in_flight[0] = out

    assert run._should_flush(now, claiming=True) is False  # another may join it
    # A millisecond past: now + FLUSH_SECONDS - now is not FLUSH_SECONDS in floating point
    # for every clock reading (1810.809971216 + 0.02 - 1810.809971216 < 0.02).
    assert run._should_flush(now + engine.FLUSH_SECONDS + 0.001, claiming=True) is True

    # Out for long (a hanging endpoint's): writing does not wait for it, so the endpoints
    # whose requests are back get their slots, and their next rows, at once.
    out.starts_at = now - engine.SLOW_REQUEST_SECONDS - 0.01
    assert run._should_flush(now, claiming=True) is True

    # Still waiting for its rate-limit slot: not out, so not back within FLUSH_SECONDS.
    out.starts_at = now + 0.5
    assert run._should_flush(now, claiming=True) is True


def test_an_attempt_the_event_loop_never_ends_is_recorded_by_the_guard(monkeypatch):
    # The event loop enforces each deadline; the guard covers a loop that stopped running.
    # Two webhooks with different timeouts: each row is given up at its own guard, not
    # before, and not only when the other's comes.
    quick = WebhookFactory(timeout=1)
    slow = WebhookFactory(timeout=2)
    monkeypatch.setattr(http, "GUARD_SECONDS", 0.2)
    handed: list[http.Started] = []

    def stalled_loop(requests, on_done):
        loop = asyncio.new_event_loop()
        loop.close()
        handles = [http.Started(loop) for _ in requests]
        handed.extend(handles)
        return handles  # and never reports an outcome

    monkeypatch.setattr(http, "submit_all", stalled_loop)
    waits = []
    wait = engine.Run._wait
    monkeypatch.setattr(engine.Run, "_wait", lambda run, *args: waits.append(wait(run, *args)))
    ArticleFactory()
    started = time.monotonic()

    engine.Run(budget=0.1, linger=0, settle_in_background=False).run()

    elapsed = time.monotonic() - started
    attempts = {a.webhook_id: a for a in DeliveryAttempt.objects.all()}
    assert set(attempts) == {quick.pk, slow.pk}
    assert all("the sender gave up" in a.error_message for a in attempts.values())
    assert attempts[quick.pk].started_at < attempts[slow.pk].started_at - datetime.timedelta(
        seconds=0.5
    )
    assert 2.2 <= elapsed < 2.2 + 2
    # Waiting sleeps until the next guard is due, not a turn of the loop after another.
    assert len(waits) < 2.2 / engine.FLUSH_SECONDS * 3
    assert len(handed) == 2
    assert all(handle.cancelled for handle in handed)
    assert Delivery.objects.filter(status="pending", attempts=1).count() == 2  # retried


def test_a_claim_that_keeps_failing_is_tried_again_after_a_pause(webhook, monkeypatch):
    from django.db import DatabaseError

    ArticleFactory()
    (item,) = claim()
    run = engine.Run(budget=1.2, linger=0)
    # An outcome waiting makes a claim due at once; the database refuses every claim.
    run.recorder.add_result(item.delivery, item.webhook, None, RuntimeError("unsendable"))
    calls = []

    def refuse(*args, **kwargs):
        calls.append(time.monotonic())
        raise DatabaseError("the database is gone")

    monkeypatch.setattr(claims, "claim", refuse)

    run.run()

    assert 2 <= len(calls) <= 1.2 / engine.CLAIM_RETRY_SECONDS + 1
    assert min(b - a for a, b in itertools.pairwise(calls)) >= engine.CLAIM_RETRY_SECONDS * 0.9
    assert DeliveryAttempt.objects.count() == 1  # written once the run stopped claiming


def test_a_run_pausing_after_a_failed_claim_waits_instead_of_spinning(
    receiver, webhook, monkeypatch
):
    """Its last request ends during the pause: the run is idle and a claim due at once,
    but not before the pause ends."""
    receiver.queue(Response(200, delay=0.3))
    ArticleFactory()
    real = claims.claim
    calls = []

    def first_then_refuse(*args, **kwargs):
        calls.append(time.monotonic())
        if len(calls) == 1:
            return real(*args, **kwargs)
        raise DatabaseError("the database is gone")

    monkeypatch.setattr(claims, "claim", first_then_refuse)
    waits = []
    wait = engine.Run._wait

    def counted(self, next_claim_at):
        waits.append(time.monotonic())
        return wait(self, next_claim_at)

    monkeypatch.setattr(engine.Run, "_wait", counted)

    engine.Run(budget=1.0, linger=0).run()

    assert len(receiver.requests) == 1
    assert len(calls) >= 2
    assert len(waits) < 200  # a wait returning at once: thousands


@pytest.mark.django_db(transaction=True)
def test_a_run_leaves_hanging_requests_to_a_thread_and_the_next_run_counts_them(
    receiver, hostile, monkeypatch
):
    hanging = hostile("hang")
    WebhookFactory(url=hanging.url, timeout=2)
    monkeypatch.setattr(tasks, "wake", lambda **kwargs: None)
    ArticleFactory.create_batch(5)

    started = time.monotonic()
    first = engine.Run(budget=0.2, linger=0, settle_in_background=True)
    first.run()

    # The task is over long before the hanging requests' deadline; they are still out,
    # held under the first run's lease, and a later run of this process counts them.
    assert time.monotonic() - started < 1.5
    assert engine.settling_in_flight() == 5
    assert Delivery.objects.filter(lease_token=first.token).count() == 5
    later = engine.Run(budget=0.1, linger=0)
    assert later._free() == later.max_in_flight - 5
    assert engine.wait_for_settling(timeout=10)
    assert engine.settling_in_flight() == 0
    assert DeliveryAttempt.objects.filter(error_class="Timeout").count() == 5
    assert not Delivery.objects.filter(lease_token=first.token).exists()


def test_nothing_is_claimed_that_could_outlast_the_task(webhook):
    webhook.timeout = 30
    webhook.save()
    ArticleFactory()

    too_soon = timezone.now() + datetime.timedelta(seconds=20)
    assert claim(must_end_by=too_soon) == []
    assert len(claim(must_end_by=timezone.now() + datetime.timedelta(seconds=40))) == 1


def test_an_attempt_the_event_loop_never_ends_is_recorded_by_the_run(webhook, monkeypatch):
    webhook.timeout = 0.1
    webhook.save()
    monkeypatch.setattr(http, "GUARD_SECONDS", 0.2)
    loop = asyncio.new_event_loop()
    monkeypatch.setattr(  # a loop that never runs the requests, nor reports on them
        http, "submit_all", lambda requests, on_done: [http.Started(loop) for _ in requests]
    )
    ArticleFactory()

    try:
        assert tasks.run() == 1
    finally:
        loop.close()
    attempt = DeliveryAttempt.objects.get()
    assert attempt.error_class == "Timeout"
    assert "the sender gave up" in attempt.error_message
    assert Delivery.objects.get().lease_token == ""


def test_a_run_stops_claiming_after_its_budget_and_finishes_what_it_sent(receiver, settings):
    WebhookFactory(url=receiver.url, max_in_flight=2)
    receiver.default = Response(200, delay=0.3)
    ArticleFactory.create_batch(10)

    run = engine.Run(budget=0.1, linger=0)
    sent = run.run()

    assert 1 <= sent < 10
    assert len(receiver.requests) == sent
    assert DeliveryAttempt.objects.count() == sent
    assert Delivery.objects.filter(status="pending", lease_token="").count() == 10 - sent
    assert run.stopped_early is True


def test_fan_out_uses_the_webhooks_as_they_are_now(webhook):
    ArticleFactory()
    copy = {webhook.pk: webhook}
    newer = WebhookFactory()

    claim(webhooks=copy)

    assert sorted(Delivery.objects.values_list("webhook_id", flat=True)) == sorted(
        [webhook.pk, newer.pk]
    )
    assert set(copy) == {webhook.pk, newer.pk}  # the caller's copy was refreshed


def test_a_webhook_disabled_before_fan_out_gets_a_skipped_delivery_and_no_request(webhook):
    ArticleFactory()
    webhook.is_active = False
    webhook.disabled_reason = "Disabled by an operator."
    webhook.save()

    assert claim() == []
    row = Delivery.objects.get()
    assert row.status == "skipped"
    assert row.last_error == "Skipped: Disabled by an operator."
    assert Event.objects.get().pending_fanout is False


def test_rows_a_fan_out_does_not_send_are_the_rows_new_delivery_describes(statements):
    """Held rows are built here; the rest (a full endpoint's, a disabled one's) on
    PostgreSQL by the server from one template per webhook: both must be what
    ``new_delivery`` says, column for column."""
    from webhooks_app.events import new_delivery

    full = WebhookFactory(max_in_flight=1, retries=2)
    roomy = WebhookFactory(retries=7)
    disabled = WebhookFactory(is_active=False, disabled_reason="Disabled by an operator.")
    for _ in range(3):
        ArticleFactory()

    taken = claim(total=3)

    assert sorted(item.webhook.pk for item in taken) == sorted([full.pk, roomy.pk, roomy.pk])
    held = {item.delivery.pk for item in taken}
    assert Delivery.objects.filter(pk__in=held).exclude(lease_token="").count() == 3
    waiting = Delivery.objects.exclude(pk__in=held).order_by("pk")
    assert sorted(row.webhook_id for row in waiting) == sorted(
        [full.pk, full.pk, roomy.pk, disabled.pk, disabled.pk, disabled.pk]
    )
    compared = [
        field.attname
        for field in Delivery._meta.concrete_fields
        if field.name not in ("id", "created_at", "completed_at")
    ]
    for row in waiting:
        expected = new_delivery(row.event, row.webhook, due_at=row.event.created_at)
        assert {name: getattr(row, name) for name in compared} == {
            name: getattr(expected, name) for name in compared
        }
        assert (row.completed_at is None) == (expected.completed_at is None)
    assert {row.status for row in waiting if row.webhook_id == disabled.pk} == {"skipped"}
    assert {row.max_attempts for row in waiting if row.webhook_id == full.pk} == {3}
    assert not Event.objects.filter(pending_fanout=True).exists()


def test_an_endpoint_declared_inactive_in_settings_gets_nothing(webhook):
    ArticleFactory()
    Webhook.objects.filter(pk=webhook.pk).update(
        is_active=False, managed_by_settings=True, disabled_reason=DECLARED_INACTIVE_REASON
    )

    assert claim() == []
    assert Delivery.objects.count() == 0


def test_a_lease_that_ran_out_is_claimed_again(statements, webhook):
    ArticleFactory()
    (first,) = claim("worker-that-died")
    lease_end = Delivery.objects.get().next_attempt_at

    assert claim("another", probe=False) == []
    with time_machine.travel(lease_end + datetime.timedelta(seconds=1), tick=False):
        (again,) = claim("another")
    assert again.delivery.pk == first.delivery.pk
    assert Delivery.objects.get().lease_token == "another"


def _fanned_out(count):
    ArticleFactory.create_batch(count)
    with transaction.atomic():
        claims.fan_out(timezone.now(), limit=100, using="default")


def test_a_queue_scan_reads_each_webhook_only_as_far_as_its_room():
    first, second, full = WebhookFactory(), WebhookFactory(), WebhookFactory()
    _fanned_out(4)

    rows = sql.due_rows(
        "default", timezone.now(), Lane.FIRST, 10, queues={first.pk: 2, second.pk: 1, full.pk: 0}
    )

    by_webhook = [row[1] for row in rows]
    assert sorted(by_webhook) == sorted([first.pk, first.pk, second.pk])
    ids = [row[0] for row in rows]
    due = dict(Delivery.objects.filter(pk__in=ids).values_list("pk", "next_attempt_at"))
    assert [due[pk] for pk in ids] == sorted(due[pk] for pk in ids)
    assert all(isinstance(row[-1], (str, bytes)) for row in rows)  # the event's body
    assert sql.due_rows("default", timezone.now(), Lane.FIRST, 10, queues={full.pk: 0}) == []


def test_a_probe_of_known_webhooks_ignores_the_others_due_rows(statements):
    busy, idle = WebhookFactory(), WebhookFactory(events=["publish"])
    _fanned_out(3)
    now = timezone.now()

    assert claims.rows_waiting(now, using="default")
    assert claims.rows_waiting(now, using="default", webhooks=[busy.pk])
    assert not claims.rows_waiting(now, using="default", webhooks=[idle.pk])
    assert not claims.rows_waiting(now, using="default", webhooks=[])
    ArticleFactory()  # pending fan-out counts for everyone
    assert claims.rows_waiting(now, using="default", webhooks=[])


def test_between_sweeps_a_full_endpoints_backlog_costs_a_claim_one_statement(
    webhook, django_assert_max_num_queries
):
    hanging = WebhookFactory(max_in_flight=1)
    _fanned_out(5)
    copy = {w.pk: w for w in (webhook, hanging)}
    blocked: set[int] = set()
    taken = claim(webhooks=copy, blocked=blocked)
    assert sorted(c.webhook.pk for c in taken) == sorted([webhook.pk] * 5 + [hanging.pk])
    assert blocked == {hanging.pk}  # at its cap: four of its rows are still due

    with django_assert_max_num_queries(1):
        assert claim(webhooks=copy, blocked=blocked, sweep=False) == []
    # A sweep looks at everything again (and finds the hanging endpoint still full).
    assert claim(webhooks=copy, blocked=blocked, sweep=True) == []
    assert blocked == {hanging.pk}


def test_between_sweeps_new_events_for_full_endpoints_wait_as_events():
    """Rows made for a full endpoint would be due rows, written twice (made, then leased):
    between sweeps a claim that finds every endpoint it knows full leaves new events
    pending. A sweep makes them."""
    busy = WebhookFactory(max_in_flight=2)
    copy = {busy.pk: busy}
    ArticleFactory.create_batch(2)
    assert len(claim(webhooks=copy, blocked=set(), sweep=False)) == 2
    ArticleFactory.create_batch(3)

    blocked: set[int] = set()
    assert claim("another", webhooks=copy, blocked=blocked, sweep=False) == []
    assert blocked == {busy.pk}
    assert Event.objects.filter(pending_fanout=True).count() == 3
    assert Delivery.objects.count() == 2

    assert claim("another", webhooks=copy, blocked=blocked, sweep=True) == []
    assert not Event.objects.filter(pending_fanout=True).exists()
    assert Delivery.objects.filter(lease_token="").count() == 3


def _held_by_another_worker(webhook):
    """The webhook's one slot (``max_in_flight=1``) taken by another worker's lease."""
    ArticleFactory()
    (taken,) = claim("another-worker", webhooks={webhook.pk: webhook}, blocked=set())
    return taken.delivery.pk


def _counting_claims(monkeypatch):
    calls = []
    real = claims.claim

    def counted(*args, **kwargs):
        calls.append(time.monotonic())
        return real(*args, **kwargs)

    monkeypatch.setattr(claims, "claim", counted)
    return calls


def test_a_run_that_finds_every_endpoint_full_looks_again_only_now_and_then(receiver, monkeypatch):
    webhook = WebhookFactory(url=receiver.url, max_in_flight=1)
    _held_by_another_worker(webhook)
    ArticleFactory()  # pending: its endpoint has no room
    calls = _counting_claims(monkeypatch)

    started = time.monotonic()
    engine.Run(budget=5, linger=0.45).run()

    # A look every BLOCKED_LOOK_SECONDS (0.1 s), not every POLL_SECONDS (0.02 s); the run
    # ends with a look made once it has lingered.
    assert 2 <= len(calls) <= 9
    assert calls[-1] - started >= 0.45
    assert receiver.requests == []


@pytest.mark.django_db(transaction=True)
def test_a_slot_another_worker_frees_is_seen_by_a_run_that_found_the_endpoint_full(
    receiver, monkeypatch
):
    """Only a run's own requests unblock an endpoint at once; with new events waiting, a
    slot freed by another worker is seen at the run's next look, well before its next
    sweep. (Without, the endpoint's due rows wait for the sweep: between sweeps probes skip
    a blocked endpoint's queue, which is what keeps a hanging endpoint's backlog cheap.)"""
    monkeypatch.setattr(tasks, "wake", lambda **kwargs: None)
    monkeypatch.setattr(engine, "SWEEP_SECONDS", 60.0)  # only the run's first claim sweeps
    webhook = WebhookFactory(url=receiver.url, max_in_flight=1)
    held = _held_by_another_worker(webhook)
    ArticleFactory()  # the run's first claim, a sweep, finds the endpoint full
    calls = _counting_claims(monkeypatch)
    run = engine.Run(budget=5, linger=3)

    def work():
        try:
            run.run()
        finally:
            connections.close_all()

    worker = threading.Thread(target=work)
    worker.start()
    try:
        deadline = time.monotonic() + 5
        while not run.blocked and time.monotonic() < deadline:
            time.sleep(0.01)
        assert run.blocked == {webhook.pk}
        ArticleFactory()  # what the run's probes look for while the endpoint is full
        Delivery.objects.filter(pk=held).update(
            status="succeeded", lease_token="", next_attempt_at=None
        )
        freed = time.time()
        request = receiver.wait_for(1, timeout=5)[0]
        assert request.received_at - freed < 1.0
    finally:
        worker.join(10)
    assert len(calls) >= 2


def test_once_a_full_endpoint_has_room_new_events_become_rows_leased_at_once():
    busy = WebhookFactory(max_in_flight=2)
    copy = {busy.pk: busy}
    ArticleFactory.create_batch(2)
    first, _ = claim(webhooks=copy, blocked=set(), sweep=False)
    ArticleFactory()
    assert claim(webhooks=copy, blocked=set(), sweep=False) == []
    Delivery.objects.filter(pk=first.delivery.pk).update(
        status="succeeded", lease_token="", next_attempt_at=None
    )

    (taken,) = claim(webhooks=copy, blocked=set(), sweep=False)

    assert taken.leased  # made by the fan-out already held: one write
    assert taken.delivery.event_id == Event.objects.order_by("created_at").last().pk
    assert not Event.objects.filter(pending_fanout=True).exists()
    assert Delivery.objects.count() == 3


def test_taking_pending_events_marks_the_oldest_and_a_rollback_leaves_them_pending(webhook):
    base = timezone.now()
    for number, offset in enumerate([3, 1, 2, 0]):
        Event.objects.create(
            id=f"evt_take_{number}",
            name="article.create",
            body="{}",
            created_at=base - datetime.timedelta(seconds=offset),
            pending_fanout=True,
        )

    class Undo(Exception):
        pass

    taken = []

    def take_then_roll_back():
        with transaction.atomic():
            taken.extend(sql.take_pending_events("default", 3)[1])
            raise Undo

    with pytest.raises(Undo):
        take_then_roll_back()
    assert [event[0] for event in taken] == ["evt_take_0", "evt_take_2", "evt_take_1"]
    assert Event.objects.filter(pending_fanout=True).count() == 4

    with transaction.atomic():
        batch, taken = sql.take_pending_events("default", 3)
    assert batch == 1
    assert [event[0] for event in taken] == ["evt_take_0", "evt_take_2", "evt_take_1"]
    assert taken[0][1:] == ("article.create", "", base - datetime.timedelta(seconds=3), "{}")
    assert list(Event.objects.filter(pending_fanout=True).values_list("id", flat=True)) == [
        "evt_take_3"
    ]


def _answered(status):
    return http.AttemptResult(started_at=timezone.now(), duration_ms=3, status_code=status)


def _request(item):
    return http.OutgoingRequest("POST", item.webhook.url, {}, b"{}", 5.0)


def test_a_claim_counts_its_own_unwritten_successes_free_and_leaves_them_to_write(
    statements,
):
    """Slots held by requests that came back with a success are free to the run that holds
    them before their outcomes are written (the write then overlaps the next requests);
    every other worker still counts the rows, which stay leased until written."""
    WebhookFactory(max_in_flight=2)
    ArticleFactory.create_batch(4)
    recorder = delivery.Recorder("a-worker")
    first = claim("a-worker")
    assert len(first) == 2
    for item in first:
        recorder.add_result(item.delivery, item.webhook, _request(item), _answered(200))

    second = claim("a-worker", recorder=recorder)
    assert len(second) == 2  # the two successes' slots, counted free
    assert len(recorder) == 2  # not written by the claim
    assert Delivery.objects.filter(lease_token="a-worker").count() == 4
    ArticleFactory()
    assert claim("another-worker") == []  # four leased rows: the endpoint is full to it

    recorder.flush()
    assert Delivery.objects.filter(status="succeeded").count() == 2
    assert set(Delivery.objects.filter(lease_token="a-worker").values_list("pk", flat=True)) == {
        item.delivery.pk for item in second
    }


def test_a_claim_writes_a_failure_first_and_takes_only_what_is_then_free(statements):
    WebhookFactory(max_in_flight=2, retries=3)
    ArticleFactory.create_batch(4)
    recorder = delivery.Recorder("a-worker")
    first = claim("a-worker")
    recorder.add_result(first[0].delivery, first[0].webhook, _request(first[0]), _answered(200))
    recorder.add_result(first[1].delivery, first[1].webhook, _request(first[1]), _answered(500))

    second = claim("a-worker", recorder=recorder)
    assert len(recorder) == 0  # written in the claim's transaction
    statuses = dict(
        Delivery.objects.filter(pk__in=[i.delivery.pk for i in first]).values_list("pk", "status")
    )
    assert sorted(statuses.values()) == ["pending", "succeeded"]
    # The retry waits for its time; both slots are free again: two first attempts went.
    assert len(second) == 2
    assert {item.delivery.pk for item in second}.isdisjoint(statuses)


def test_outcomes_whose_write_failed_are_written_first_by_the_next_claim(monkeypatch):
    WebhookFactory(max_in_flight=2)
    ArticleFactory.create_batch(4)
    recorder = delivery.Recorder("a-worker")
    first = claim("a-worker")
    for item in first:
        recorder.add_result(item.delivery, item.webhook, _request(item), _answered(200))
    original = sql.write_outcomes
    monkeypatch.setattr(
        sql, "write_outcomes", lambda *args: (_ for _ in ()).throw(RuntimeError("gone"))
    )
    with pytest.raises(RuntimeError):
        recorder.flush()
    assert recorder.slots_of_successes() is None  # not counted free again

    monkeypatch.setattr(sql, "write_outcomes", original)
    second = claim("a-worker", recorder=recorder)
    assert len(recorder) == 0
    assert Delivery.objects.filter(status="succeeded").count() == 2
    assert len(second) == 2


def _credited_run(holder_cap=2):
    """A run holding two ended successes of a webhook at its cap, not yet written."""
    WebhookFactory(max_in_flight=holder_cap)
    ArticleFactory.create_batch(4)
    run = engine.Run(budget=5, linger=0)
    first = claim(run.token)
    for item in first:
        run.recorder.add_result(item.delivery, item.webhook, _request(item), _answered(200))
    return run


def test_a_run_writes_the_successes_it_counted_free_even_if_the_hand_over_fails(monkeypatch):
    run = _credited_run()

    def refuse(requests, on_done):
        raise RuntimeError("the loop is gone")

    monkeypatch.setattr(http, "submit_all", refuse)
    with pytest.raises(RuntimeError):
        run._claim()
    assert Delivery.objects.filter(status="succeeded").count() == 2
    assert len(run.recorder) == 0


def test_a_failed_claim_writes_the_successes_it_counted_free_at_once(monkeypatch):
    run = _credited_run()

    def lock_timeout(*args):
        raise DatabaseError("canceling statement due to lock timeout")

    monkeypatch.setattr(sql, "lock", lock_timeout)
    assert run._claim() == 0
    assert Delivery.objects.filter(status="succeeded").count() == 2
    assert len(run.recorder) == 0


def test_a_claim_sends_nothing_more_to_a_webhook_its_own_write_just_disabled(statements):
    """A 410 written first in the claim's transaction disables the webhook there and then;
    the run's copy of the webhooks (read before) still shows it active."""
    hook = WebhookFactory(max_in_flight=1)
    ArticleFactory.create_batch(2)
    recorder = delivery.Recorder("a-worker")
    (first,) = claim("a-worker")
    recorder.add_result(first.delivery, first.webhook, _request(first), _answered(410))
    copy = {hook.pk: Webhook.objects.get(pk=hook.pk)}

    assert claim("a-worker", recorder=recorder, webhooks=copy) == []

    hook.refresh_from_db()
    assert not hook.is_active
    assert not Delivery.objects.filter(lease_token="a-worker").exists()
