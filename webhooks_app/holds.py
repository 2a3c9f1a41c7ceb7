"""Holding back a slow webhook's new events while it works through a backlog.

A fan-out makes one Delivery row per event and subscribed webhook. For an endpoint that
cannot keep up (it hangs until its timeout, or answers slowly) most of those rows would only
wait, and each one still costs the database a row in nine indexes and two foreign-key
checks: on a machine at its limit, that was most of what a hanging endpoint took from the
others (docs/benchmarks.md, item 19). So once a webhook with a request out for
``SLOW_SECONDS`` has a deep queue of pending deliveries (``depth``), later fan-outs make no
rows for it; a ``HeldFanout`` row records that it is owed every event it subscribes to
from the next fan-out batch on (``Event.fanout_batch``, numbered under the claim lock, so
an event that commits late is in a later batch, never skipped). Claims turn those events
into deliveries, oldest first, whenever its queue is shorter than ``depth``
(``claims._Claim._release_held``), and delete the row once it has caught up. A disabled
webhook's owed events become skipped deliveries, as its new events do.

Nothing is lost: the events stay (the prune keeps every event a held webhook is owed), the
hold commits with the fan-out that made it, and a release with the deliveries it makes.
What an operator sees meanwhile: at least ``depth`` of the webhook's deliveries pending, and
the hold on the webhook's page, with the number of events waiting.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping

from django.db.models import Exists, OuterRef, Q, QuerySet

from webhooks_app import sql
from webhooks_app.models import Delivery, DeliveryStatus, Event, HeldFanout, Lane, Webhook

# Only an endpoint with a request out this long is held back: a fast one's queue deepens in
# a burst as well, and held, its rows would each be written twice (made due, then leased).
SLOW_SECONDS = 0.5
# A held webhook's queue is refilled up to this many rows per request it may have in flight
# (and never below MIN_DEPTH): enough that its slots never wait for a release.
DEPTH_PER_SLOT = 4
MIN_DEPTH = 100
# Owed events a sweep makes skipped rows of, per disabled webhook (in one statement).
SKIP_BATCH = 500


def depth(webhook: Webhook) -> int:
    """How many pending deliveries a webhook may have before its new events are held back;
    a held webhook's queue is refilled whenever it is shorter."""
    return max(MIN_DEPTH, DEPTH_PER_SLOT * webhook.effective_max_in_flight)


def queue_depth(using: str, webhook_id: int, limit: int) -> int:
    """The webhook's pending first attempts (its queue index), counted up to ``limit``.
    Retries are left out: rows waiting minutes for their next attempt must not keep a
    recovered endpoint's new events waiting (retries never starve first attempts)."""
    pending = Delivery.objects.using(using).filter(
        webhook_id=webhook_id, status=DeliveryStatus.PENDING, lane=Lane.FIRST
    )
    # The webhook's column, not the id: read from the queue index alone.
    return int(pending.values("webhook_id")[:limit].count())


def held(using: str) -> dict[int, tuple[int, int | None]]:
    """Every held webhook's id, with the first fan-out batch it has no rows for, and the
    batch its hold ends at (None: open)."""
    return sql.held_fanouts(using)


def hold(using: str, webhook_id: int, from_batch: int) -> None:
    HeldFanout.objects.using(using).create(webhook_id=webhook_id, from_batch=from_batch)


def close(using: str, webhook_id: int, until_batch: int) -> None:
    """The webhook stopped receiving: the fan-out makes its rows (skipped) or none again
    from ``until_batch`` on, and the hold owes only the batches before."""
    HeldFanout.objects.using(using).filter(webhook_id=webhook_id).update(until_batch=until_batch)


def _covered(using: str, from_batch: int, until_batch: int | None) -> QuerySet[Event]:
    """The events of a hold's batches: from ``from_batch`` on, and before ``until_batch``
    if it has closed."""
    events = Event.objects.using(using).filter(fanout_batch__gte=from_batch)
    if until_batch is not None:
        events = events.filter(fanout_batch__lt=until_batch)
    return events


def owed_events(
    using: str, from_batch: int, limit: int, until_batch: int | None = None
) -> tuple[list[tuple[str, str, str, datetime.datetime, int]], bool]:
    """(id, name, model, created_at, batch) of the events of whole fan-out batches from
    ``from_batch`` on, about ``limit`` of them (a batch is never split, so a batch larger
    than ``limit`` is read whole), oldest batch first; and whether these are all there are."""
    events = _covered(using, from_batch, until_batch)
    fields = ("id", "name", "model", "created_at", "fanout_batch")
    rows = list(events.order_by("fanout_batch").values_list(*fields)[: limit + 1])
    if len(rows) <= limit:
        return rows, True
    last = rows[-1][4]
    whole = [row for row in rows if row[4] != last]
    if whole:
        return whole, False
    whole = list(events.filter(fanout_batch=last).values_list(*fields))
    return whole, not events.filter(fanout_batch__gt=last).exists()


def move_on(using: str, webhook_id: int, from_batch: int | None) -> None:
    """After a release: the first batch still owed, or (None) no hold: caught up."""
    rows = HeldFanout.objects.using(using).filter(webhook_id=webhook_id)
    if from_batch is None:
        rows.delete()
    else:
        rows.update(from_batch=from_batch)


def releasable(using: str, depths: Mapping[int, int] | None) -> bool:
    """Is a hold waiting for a claim: one of ``depths``' webhooks (id: its depth) whose
    queue is shorter than that, or, without ``depths``, any held webhook whose queue is
    shorter than its own depth, or that is disabled (its owed events become skipped rows)."""
    rows = HeldFanout.objects.using(using)
    if depths is not None:
        ids = rows.filter(webhook_id__in=list(depths)).values_list("webhook_id", flat=True)
        return any(queue_depth(using, id_, depths[id_]) < depths[id_] for id_ in ids)
    for hold in rows.select_related("webhook"):
        if not hold.webhook.is_active:
            return True
        limit = depth(hold.webhook)
        if queue_depth(using, hold.webhook_id, limit) < limit:
            return True
    return False


def not_owed(events: QuerySet[Event]) -> QuerySet[Event]:
    """``events`` without those a held webhook is still owed (the prune's guard)."""
    owed = HeldFanout.objects.filter(from_batch__lte=OuterRef("fanout_batch")).filter(
        Q(until_batch__isnull=True) | Q(until_batch__gt=OuterRef("fanout_batch"))
    )
    return events.exclude(Exists(owed))


def shown(webhook_id: int, *, using: str, most: int = 10_000) -> tuple[HeldFanout, int] | None:
    """The webhook's hold, with how many events were fanned out since (counted up to
    ``most``; an upper bound on what it is owed: some may be of event types it does not
    subscribe to), for the admin; None when it is not held."""
    hold = HeldFanout.objects.using(using).filter(webhook_id=webhook_id).first()
    if hold is None:
        return None
    since = _covered(using, hold.from_batch, hold.until_batch)
    return hold, int(since.values("id")[:most].count())
