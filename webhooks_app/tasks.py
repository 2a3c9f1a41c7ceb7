"""django-q2 glue: the one way work reaches the queue.

* ``PendingBatch`` hands the deliveries a transaction created to the workers once it
  commits, in one batch.
* ``deliver_batch`` is the task a worker runs: it calls ``delivery.deliver``.
* ``run_dispatcher`` is a loop (one at a time across all clusters, held by a lease row) that
  every ``DISPATCH_INTERVAL`` seconds claims the deliveries that are due (retries, and rows
  whose queue message was lost) and enqueues them. At the end of its run it enqueues itself
  again; a django-q2 Schedule restarts it within a minute if that message is lost too.

django-q2's own re-presentation of failed tasks is never our retry mechanism: the tasks here
do not raise, and a re-presented message finds its rows already taken (lease tokens differ).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Q
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.tasks import async_task

from webhooks_app.conf import app_settings
from webhooks_app.models import Delivery, Lease

logger = logging.getLogger("webhooks_app.tasks")

DISPATCHER_LEASE = "webhooks_app.dispatcher"
SCHEDULE_NAME = "webhooks_app.dispatcher"
DELIVER_TASK = "webhooks_app.tasks.deliver_batch"
DISPATCH_TASK = "webhooks_app.tasks.run_dispatcher"
# How often a process may look at the dispatcher's lease to restart it (see kick_dispatcher).
KICK_INTERVAL_SECONDS = 15.0

_brokers: dict[str | None, Broker] = {}
_brokers_lock = threading.Lock()
_last_kick = 0.0


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


class PendingBatch:
    """Deliveries created in one transaction: one lease token, enqueued together on commit.

    All deliveries created in one transaction share one on-commit callback, so a bulk import
    becomes a few large batches instead of one queue message per save. A rollback discards
    the callback, and the rows with it.
    """

    def __init__(self, using: str) -> None:
        self.using = using
        self.lease_token = uuid.uuid4().hex
        self.ids: list[int] = []
        self.registered = False
        self.sent = False

    def add(self, ids: Sequence[int]) -> None:
        self.ids.extend(ids)
        if not self.registered and self.ids:
            self.registered = True
            transaction.on_commit(self, using=self.using, robust=True)

    def __call__(self) -> None:
        self.sent = True
        enqueue_deliveries(self.ids, self.lease_token)
        kick_dispatcher()


_pending_batches: threading.local = threading.local()


def batch_for_transaction(using: str) -> PendingBatch:
    """The batch new deliveries join: the current transaction's, or a new one."""
    batch: PendingBatch | None = getattr(_pending_batches, using, None)
    if (
        batch is not None
        and batch.registered
        and not batch.sent
        and connections[using].in_atomic_block
        and _still_registered(using, batch)
    ):
        return batch
    batch = PendingBatch(using)
    setattr(_pending_batches, using, batch)
    return batch


def _still_registered(using: str, batch: PendingBatch) -> bool:
    # A rolled-back savepoint removes its callbacks (and a commit runs them): only join a
    # batch whose callback is still waiting to run.
    return any(entry[1] is batch for entry in connections[using].run_on_commit)


def enqueue_deliveries(ids: Sequence[int], lease_token: str) -> None:
    """Queue ``deliver_batch`` messages for leased rows, ``BATCH_SIZE`` rows each.

    A failure to reach the broker is logged, not raised: the rows stay leased, their lease
    runs out, and the dispatcher enqueues them again.
    """
    size = max(1, int(app_settings.BATCH_SIZE))
    for start in range(0, len(ids), size):
        chunk = list(ids[start : start + size])
        try:
            _enqueue(DELIVER_TASK, chunk, lease_token)
        except Exception:
            logger.exception(
                "could not enqueue %d deliveries; the dispatcher will retry them", len(chunk)
            )


def deliver_batch(ids: list[int], lease_token: str) -> int:
    """The worker's task: attempt these deliveries if we still hold their lease."""
    from webhooks_app import delivery  # the HTTP side; imported here to keep tasks light

    try:
        return delivery.deliver(ids, lease_token)
    except Exception:
        # Rows not yet recorded keep their lease and come back through the dispatcher.
        logger.exception("delivery batch of %d failed; its rows will be retried", len(ids))
        return 0
    finally:
        kick_dispatcher()


# --- dispatcher -------------------------------------------------------------------------


def claim_due(
    due_before: datetime.datetime, limit: int, *, now: datetime.datetime | None = None
) -> tuple[str, list[int]]:
    """Lease up to ``limit`` due deliveries to a new token; returns it and the rows it got.

    The UPDATE re-checks the due condition, so when two dispatchers race for a row only one
    gets it, without ``select_for_update`` (which SQLite lacks). Rows come back ordered by
    webhook, so a batch reuses one kept-alive connection for as long as it can.
    """
    now = now or due_before
    candidates = list(
        Delivery.objects.due(due_before)
        .order_by("next_attempt_at")
        .values_list("id", flat=True)[:limit]
    )
    token = uuid.uuid4().hex
    if not candidates:
        return token, []
    lease_until = now + datetime.timedelta(seconds=float(app_settings.LEASE_SECONDS))
    Delivery.objects.due(due_before).filter(id__in=candidates).update(
        lease_token=token, next_attempt_at=lease_until
    )
    claimed = list(
        Delivery.objects.filter(id__in=candidates, lease_token=token)
        .order_by("webhook_id", "id")
        .values_list("id", flat=True)
    )
    return token, claimed


def dispatch_once(now: datetime.datetime | None = None) -> int:
    """Claim what is due and enqueue it; returns how many deliveries were enqueued.

    While the queue already holds more messages than the workers can start soon, nothing is
    claimed: claimed rows would only wait in the queue until their lease ran out.
    """
    limit = max(1, int(app_settings.BATCH_SIZE)) * max(2, int(Conf.WORKERS or 1))
    now = now or timezone.now()
    due_before = now
    if not sync_mode():
        try:
            if _broker().queue_size() >= max(4, 2 * int(Conf.WORKERS or 1)):
                # The queue may be busy with the host's own tasks: still hand out rows that
                # have been overdue for a whole lease, or they could wait for ever.
                lease = datetime.timedelta(seconds=float(app_settings.LEASE_SECONDS))
                due_before = now - lease
        except Exception:
            logger.exception("could not read the queue size; dispatching anyway")
    token, ids = claim_due(due_before, limit, now=now)
    if ids:
        enqueue_deliveries(ids, token)
    return len(ids)


def _acquire_lease(name: str, owner: str, seconds: float) -> bool:
    now = timezone.now()
    expires_at = now + datetime.timedelta(seconds=seconds)
    taken = (
        Lease.objects.filter(name=name)
        .filter(Q(expires_at__lt=now) | Q(owner=owner))
        .update(owner=owner, expires_at=expires_at)
    )
    if taken:
        return True
    _, created = Lease.objects.get_or_create(
        name=name, defaults={"owner": owner, "expires_at": expires_at}
    )
    return created


def _release_lease(name: str, owner: str) -> None:
    Lease.objects.filter(name=name, owner=owner).update(expires_at=timezone.now())


def dispatcher_running() -> bool:
    return Lease.objects.filter(name=DISPATCHER_LEASE, expires_at__gte=timezone.now()).exists()


def run_dispatcher(
    run_seconds: float | None = None, sleep: Callable[[float], None] = time.sleep
) -> str:
    """The dispatcher loop; returns immediately if another one holds the lease."""
    from webhooks_app import sync

    if sync_mode():
        # Inline tasks would make this loop block the caller; tests call dispatch_once().
        return "sync mode: not looping"
    owner = uuid.uuid4().hex
    interval = float(app_settings.DISPATCH_INTERVAL)
    lease_seconds = max(5.0, interval * 5)
    if not _acquire_lease(DISPATCHER_LEASE, owner, lease_seconds):
        return "another dispatcher is running"
    sync.ensure_synced(using=DEFAULT_DB_ALIAS)
    deadline = time.monotonic() + float(
        run_seconds if run_seconds is not None else app_settings.DISPATCHER_RUN_SECONDS
    )
    dispatched = 0
    try:
        while time.monotonic() < deadline:
            try:
                dispatched += dispatch_once()
            except Exception:
                logger.exception("dispatch pass failed; trying again in %.1fs", interval)
            if not _acquire_lease(DISPATCHER_LEASE, owner, lease_seconds):
                return f"lost the lease after dispatching {dispatched}"
            sleep(interval)
    finally:
        _release_lease(DISPATCHER_LEASE, owner)
        try:
            _enqueue(DISPATCH_TASK)
        except Exception:
            logger.exception("could not re-enqueue the dispatcher; its schedule will restart it")
    return f"dispatched {dispatched}"


def kick_dispatcher(*, force: bool = False) -> None:
    """Start the dispatcher if nobody runs it; looks at most every few seconds per process.

    The schedule alone would restart a lost dispatcher only on its next tick; this restarts
    it as soon as there is traffic.
    """
    global _last_kick
    if sync_mode():
        return
    now = time.monotonic()
    if not force and now - _last_kick < KICK_INTERVAL_SECONDS:
        return
    _last_kick = now
    try:
        if not dispatcher_running():
            _enqueue(DISPATCH_TASK)
    except Exception:
        logger.exception("could not check or start the dispatcher")


def on_worker_spawn(**kwargs: Any) -> None:
    """django-q2's ``post_spawn``: a worker process started."""
    kick_dispatcher(force=True)


def ensure_schedule() -> None:
    """Create or update the django-q2 Schedule that restarts the dispatcher every minute."""
    from django_q.models import Schedule

    Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": DISPATCH_TASK,
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
            "cluster": app_settings.QUEUE,
        },
    )
