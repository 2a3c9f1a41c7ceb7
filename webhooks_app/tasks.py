"""django-q2 glue: the one way work reaches the queue.

Queue messages carry no rows, only "there is work": a worker that runs ``run`` claims what is
due from the database itself (``engine``). So a message lost, presented twice or coming late
costs nothing but a wake-up; the rows are the record.

* ``wake_on_commit`` (writers): after the transaction commits, ``wake`` enqueues ``run``;
  wake-ups from one process are coalesced (``WAKE_COALESCE_SECONDS``).
* ``run`` (the task): one engine run, a few seconds at most; it enqueues its successor when
  it stopped with work left.
* The ticker: a thread in the worker processes, one of which (holding a lease row) looks for
  due work every ``DISPATCH_INTERVAL`` (retries coming due, rows a killed worker held, events
  whose wake-up was lost) and enqueues ``run`` when it finds some. It sleeps between looks; it
  never occupies a worker. A django-q2 Schedule calls ``tick`` every minute as a backstop.

django-q2's own re-presentation of failed tasks is never our retry mechanism: our tasks do
not raise, and a duplicate ``run`` only finds the rows already taken.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
import uuid
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.tasks import async_task

from webhooks_app.conf import app_settings
from webhooks_app.models import Lease

logger = logging.getLogger("webhooks_app.tasks")

RUN_TASK = "webhooks_app.tasks.run"
TICK_TASK = "webhooks_app.tasks.tick"
TICKER_LEASE = "webhooks_app.ticker"
SCHEDULE_NAME = "webhooks_app.ticker"
# A process sends at most one wake-up this often; a run lingers longer than this
# (engine.LINGER_SECONDS), so a row whose wake-up was skipped is found by the run woken
# just before it.
WAKE_COALESCE_SECONDS = 0.05
# While the queue holds messages (ours, or the host's own tasks) the ticker adds no wake-up
# of its own, but at least one this often: a busy queue must not hold retries back for ever.
TICK_WAKE_AT_LEAST_EVERY_SECONDS = 10.0

_brokers: dict[str | None, Broker] = {}
_brokers_lock = threading.Lock()
_last_wake = 0.0
_last_tick_wake = 0.0


class _CallerORMBroker(ORM):  # type: ignore[misc]  # django_q is untyped
    """django-q2's ORM broker, minus closing the caller's database connection.

    The stock broker calls ``close_old_connections()`` on every call made outside a
    transaction, which is right for the cluster's long-lived pusher but, from our on-commit
    hand-over, closes the web request's connection after every committed save (with
    ``CONN_MAX_AGE=0``): a reconnect per save, a third of the cost of a save measured in
    bench/write_path.py.
    """

    @staticmethod
    def get_connection(list_key: str | None = None) -> Any:
        return OrmQ.objects.using(Conf.ORM)


def _broker() -> Broker:
    """One broker per process and queue: creating one per message costs a connection."""
    queue = app_settings.QUEUE
    with _brokers_lock:
        broker = _brokers.get(queue)
        if broker is None:
            broker = get_broker(queue)
            if type(broker) is ORM:
                broker = _CallerORMBroker(list_key=broker.list_key)
            _brokers[queue] = broker
        return broker


def _enqueue(func: str, *args: Any) -> None:
    # save=False: the Delivery rows are the record; django-q2 need not store successes.
    async_task(func, *args, cluster=app_settings.QUEUE, broker=_broker(), save=False)


def sync_mode() -> bool:
    return bool(Conf.SYNC)


# --- waking the workers --------------------------------------------------------------------


def wake(*, force: bool = False) -> None:
    """Ask a worker to run the engine; never raises.

    A broker that cannot be reached is logged: the rows are due in the database, and the
    ticker finds them within ``DISPATCH_INTERVAL``.
    """
    global _last_wake
    now = time.monotonic()
    if not force and not sync_mode() and now - _last_wake < WAKE_COALESCE_SECONDS:
        return
    _last_wake = now
    try:
        _enqueue(RUN_TASK)
    except Exception:
        logger.exception("could not wake a worker; the ticker will find the deliveries")


def wake_on_commit(using: str = DEFAULT_DB_ALIAS) -> None:
    """Wake a worker once the current transaction commits (at once in autocommit); a
    rollback drops the wake-up with the rows. A transaction with many events registers one
    callback per event: after commit all but the first are coalesced away by ``wake``."""
    transaction.on_commit(wake, using=using, robust=True)


# --- the task ------------------------------------------------------------------------------


def run(*args: Any, **kwargs: Any) -> int:
    """The worker's task: one engine run; returns how many rows it settled. Never raises.

    Arguments are ignored: messages queued by earlier versions (``deliver_batch(ids,
    token)``) are wake-ups like any other.
    """
    from webhooks_app import engine  # the HTTP side; imported here to keep writers light

    start_ticker()
    linger = 0.0 if sync_mode() else engine.LINGER_SECONDS
    worker = engine.Run(linger=linger)
    try:
        return worker.run()
    except Exception:
        # Rows not yet recorded keep their lease, which runs out; then they are due again.
        logger.exception("a delivery run failed; its rows will be retried")
        return 0
    finally:
        if worker.stopped_early and not sync_mode():
            wake(force=True)


# Messages and schedules written by earlier versions name these.
deliver_batch = run


# --- the ticker ----------------------------------------------------------------------------


def tick() -> bool:
    """Look once for work nobody is doing and wake a worker for it; True when it did.

    Also the django-q2 Schedule's task (every minute), which restarts this process's ticker
    thread if it died.
    """
    from webhooks_app import claims, sync

    global _last_tick_wake
    start_ticker()
    sync.ensure_synced(using=DEFAULT_DB_ALIAS)
    if not claims.rows_waiting(timezone.now(), using=DEFAULT_DB_ALIAS):
        return False
    now = time.monotonic()
    if not sync_mode() and now - _last_tick_wake < TICK_WAKE_AT_LEAST_EVERY_SECONDS:
        try:
            if _broker().queue_size() > 0:
                return False  # a wake-up is already waiting for a free worker
        except Exception:
            logger.exception("could not read the queue size; waking a worker anyway")
    _last_tick_wake = now
    wake(force=True)
    return True


run_dispatcher = tick


class _Ticker(threading.Thread):
    """The ticker thread of one worker process; only the lease holder ticks."""

    def __init__(self) -> None:
        super().__init__(name="webhooks-ticker", daemon=True)
        self.pid = os.getpid()
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.stop_event = threading.Event()

    def run(self) -> None:
        holding = False
        while not self.stop_event.is_set():
            interval = float(app_settings.DISPATCH_INTERVAL)
            try:
                # Non-holders only read the lease, and only take it once its holder is gone.
                if holding or not Lease.objects.is_held(TICKER_LEASE):
                    holding = Lease.objects.acquire(
                        TICKER_LEASE, self.owner, ticker_lease_seconds()
                    )
                if holding:
                    tick()
            except Exception:
                logger.exception("the webhook ticker failed; trying again")
                holding = False
                connections.close_all()
            self.stop_event.wait(interval if holding else interval * 3)

    def stop(self) -> None:
        self.stop_event.set()
        try:
            Lease.objects.release(TICKER_LEASE, self.owner)
        except Exception:
            logger.exception("could not release the ticker's lease")
        finally:
            connections.close_all()


_ticker: _Ticker | None = None
_ticker_lock = threading.Lock()


def start_ticker() -> None:
    """Start this process's ticker thread unless it runs (not in sync mode: tests tick)."""
    global _ticker
    if sync_mode():
        return
    with _ticker_lock:
        if _ticker is not None and _ticker.pid == os.getpid() and _ticker.is_alive():
            return
        _ticker = _Ticker()
        _ticker.start()


def ticker_running() -> bool:
    """Whether some process's ticker holds its lease (workers are alive)."""
    return Lease.objects.is_held(TICKER_LEASE)


def ticker_lease_seconds() -> float:
    return max(5.0, float(app_settings.DISPATCH_INTERVAL) * 5)


def worker_seen_at() -> datetime.datetime | None:
    """When a worker was last seen: the ticker's lease is renewed every DISPATCH_INTERVAL by
    one worker process of a running cluster (another takes it over within seconds when that
    one dies), so its last renewal is the workers' heartbeat. None if no worker ever ran."""
    lease = Lease.objects.filter(name=TICKER_LEASE).first()
    if lease is None:
        return None
    renewed = lease.expires_at - datetime.timedelta(seconds=ticker_lease_seconds())
    return min(renewed, timezone.now())


def on_worker_spawn(**kwargs: Any) -> None:
    """django-q2's ``post_spawn``: a worker process started; so does its ticker."""
    start_ticker()


def ensure_schedule() -> None:
    """Create or update the django-q2 Schedule that calls ``tick`` every minute."""
    from django_q.models import Schedule

    Schedule.objects.filter(func="webhooks_app.tasks.run_dispatcher").delete()
    Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": TICK_TASK,
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
            "cluster": app_settings.QUEUE,
        },
    )
