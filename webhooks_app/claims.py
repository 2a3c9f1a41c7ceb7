"""Claiming work: events fanned out into deliveries, and due deliveries leased to a sender.

Every claim runs in one transaction that starts by locking one row (``sql.lock``, an UPDATE
of one Lease row), so claims from all workers and clusters take turns. That makes three
limits exact across processes, with the database as the only coordinator:

* **Requests in flight per endpoint.** A leased row is a request in flight (or about to be,
  or one that has just ended and awaits its outcome's write); a claim counts them per
  webhook and takes no more than the webhook's ``effective_max_in_flight`` allows. The
  claiming run alone may count its own ended successes free (``claim``): it knows they are
  no longer at the receiver; every other worker counts them until they are written.
* **Rate limits.** A rate-limited webhook's next free send slot lives in ``RateLimitState``;
  a claim hands out the slots of the next ``RATE_HORIZON_SECONDS`` and moves it on. Rows
  over the limit are simply not claimed: they wait, due, and are never failed for it.
* **Lanes.** Retries and resends (``Lane.RETRY``) may take at most ``RETRY_SHARE`` of an
  endpoint's slots and of the claiming worker's before first attempts had their turn; they
  borrow what first attempts leave unused. First attempts therefore always keep at least the
  rest, and a recovery of a thousand failed deliveries does not hold up new events.

Rows of a webhook that is saturated or rate-blocked are excluded from the scan, so a hanging
endpoint's backlog at the head of the queue does not hide other endpoints' rows behind it.
"""

from __future__ import annotations

import datetime
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from webhooks_app import holds, sql, subscriptions
from webhooks_app.conf import app_settings
from webhooks_app.delivery import Recorder
from webhooks_app.events import new_delivery
from webhooks_app.models import (
    CLAIM_LOCK,
    Delivery,
    DeliveryStatus,
    Event,
    Lane,
    RateLimitState,
    Trigger,
    Webhook,
)

# A claim hands out the rate-limited slots of this far ahead; the rows wait in the sender.
RATE_HORIZON_SECONDS = 1.0
# A claimed row's lease covers its wait for a slot, its deadline, and this much for writing
# the outcome; LEASE_SECONDS is the floor.
RECORDING_SLACK_SECONDS = 10.0
# A scan of one lane stops after this many rounds of excluding webhooks that filled up.
_SCAN_ROUNDS = 3
_SCAN_PAGE = 100
# What sending and recording a claimed row need (each column fetched costs, per row).
_CANDIDATE_FIELDS = ("id", "webhook_id", "event_id", "attempts", "max_attempts", "next_trigger")


@dataclass
class Claimed:
    """A row this sender now holds, with what it needs to send it."""

    delivery: Delivery
    webhook: Webhook
    body: bytes = b""
    # Wall-clock time of its rate-limited slot; None = send at once.
    send_at: datetime.datetime | None = None
    # Created by this claim's fan-out already leased (a scanned row is leased at the end).
    leased: bool = False


@dataclass
class Capacity:
    """What the claiming sender can take: free slots, and free slots for the retry lane."""

    total: int
    retry: int


@dataclass
class _Allowance:
    """What one webhook may still get in this claim."""

    total: int
    retry: int
    rate_slots: int | None = None
    next_slot: datetime.datetime | None = None
    interval: float = 0.0
    taken: list[Claimed] = field(default_factory=list)

    def room(self, lane: str, borrowing: bool) -> int:
        room = self.total if lane == Lane.FIRST or borrowing else min(self.total, self.retry)
        if self.rate_slots is not None:
            room = min(room, self.rate_slots)
        return max(0, room)


def lease_seconds(webhook: Webhook, wait: float = 0.0) -> float:
    """How long a claim holds a row of ``webhook``: never shorter than its attempt can take."""
    needed = wait + webhook.effective_timeout + RECORDING_SLACK_SECONDS
    return max(float(app_settings.LEASE_SECONDS), needed)


def fan_out(now: datetime.datetime, *, limit: int, using: str) -> int:
    """Create the deliveries of up to ``limit`` events still pending fan-out, all due;
    returns how many. Call inside a transaction: it takes the claim lock, so two workers
    never fan out one event twice. (A claim fans out as it claims.)"""
    sql.lock(using, CLAIM_LOCK)
    return _Claim("", Capacity(total=0, retry=0), now, using, None, None)._fan_out(limit)


def claim(
    token: str,
    capacity: Capacity,
    *,
    using: str,
    fan_out_limit: int,
    must_end_by: datetime.datetime | None = None,
    webhooks: dict[int, Webhook] | None = None,
    probe: bool = True,
    recorder: Recorder | None = None,
    sweep: bool = True,
    blocked: set[int] | None = None,
) -> list[Claimed]:
    """Fan out pending events, then lease due rows to ``token`` within every limit.

    Returns the rows claimed, with their bodies, ready to send once this returns (the
    transaction has committed). Rows of inactive webhooks found on the way are settled as
    skipped here, without a request. With ``must_end_by``, rows whose attempt could still be
    running then (a long timeout, a late rate-limit slot) are left for another run.

    ``webhooks`` is the caller's recent copy of the active webhooks by id (a run refreshes
    it every ``SUBSCRIPTION_CACHE_SECONDS``); webhooks missing from it are read, and when
    the claim fans events out it reads them all and refreshes the copy in place. With
    ``probe``, two indexed reads first check that anything is waiting at all. A
    ``recorder``'s outcomes free the slots their rows hold: when all of them succeeded, the
    claim counts those slots free and leaves the outcomes in the recorder, for the caller to
    write once the new requests are out (so that write overlaps them instead of delaying
    them: bench/worker_path.py); any other outcome is written first, in the same
    transaction, so its verdicts (a webhook disabled by a 410, the failure policy's) are
    in the database before rows are taken.

    Without ``sweep`` (and with ``webhooks``) the probe and the scans read only the queues
    of those webhooks, and the probe leaves out ``blocked`` ones (what the caller's last
    claim found full or rate-limited; the claim replaces the set with what it finds), so a
    hanging endpoint's due rows cost a run nothing between its claims. A sweep reads every
    due row, so rows of webhooks the copy does not know (deactivated ones, to be skipped;
    new ones) are found too.
    """
    pending_writes = recorder is not None and len(recorder) > 0
    if capacity.total <= 0 and not pending_writes:
        return []
    slots_of_successes = None
    if recorder is not None and capacity.total > 0:
        slots_of_successes = recorder.slots_of_successes()
    write_first = pending_writes and slots_of_successes is None
    # Most looks find nothing: answer those without the lock (on SQLite the lock is the
    # database's one write lock, which the writers need).
    sweep = sweep or webhooks is None
    if probe and not write_first:
        only = None
        if not sweep and webhooks is not None:
            only = {
                webhook_id: holds.depth(webhook)
                for webhook_id, webhook in webhooks.items()
                if webhook.is_active and webhook_id not in (blocked or ())
            }
        if not rows_waiting(timezone.now(), using=using, webhooks=only):
            return []
    with transaction.atomic(using=using):
        if capacity.total > 0:
            # Before the write, which locks the rows it records: deleting a webhook takes
            # this lock and then the webhook's leased rows (models.py), so the other order
            # would deadlock with it.
            sql.lock(using, CLAIM_LOCK)
        if write_first and recorder is not None:
            recorder.write()
        claimed: list[Claimed] = []
        if capacity.total > 0:
            claimer = _Claim(token, capacity, timezone.now(), using, must_end_by, webhooks)
            if write_first and recorder is not None:
                # Read again, as the write above left them: the caller's copy still shows a
                # webhook it just disabled as active, and its due rows would be sent.
                for webhook_id in recorder.disabled_by_write():
                    claimer.webhooks.pop(webhook_id, None)
            claimer.held_by_finished = slots_of_successes or {}
            claimer.sweep = sweep
            claimed = claimer.run(fan_out_limit)
            if blocked is not None:
                blocked.clear()
                blocked.update(claimer.exclude)
            if webhooks is not None and claimer.fresh_webhooks is not None:
                webhooks.clear()
                webhooks.update((webhook.pk, webhook) for webhook in claimer.fresh_webhooks)
    if write_first and recorder is not None:
        recorder.after_commit()
    return claimed


class _Claim:
    """One claim's bookkeeping; lives inside the claim transaction."""

    def __init__(
        self,
        token: str,
        capacity: Capacity,
        now: datetime.datetime,
        using: str,
        must_end_by: datetime.datetime | None,
        webhooks: dict[int, Webhook] | None,
    ):
        self.token = token
        self.must_end_by = must_end_by
        self.capacity = capacity
        self.now = now
        self.using = using
        self.webhooks: dict[int, Webhook] = dict(webhooks or {})
        # The active webhooks as read by this claim's fan-out, if it read them.
        self.fresh_webhooks: list[Webhook] | None = None
        self.sweep = True
        self.any_rate_limited = webhooks is None or any(w.rate_limit for w in webhooks.values())
        self.allowances: dict[int, _Allowance] = {}
        # Webhooks no scan should return rows of any more: full, rate-blocked or inactive;
        # and those whose retries have used their share (first attempts may still go).
        self.exclude: set[int] = set()
        self.retry_share_used: set[int] = set()
        self.skipped: dict[int, list[int]] = defaultdict(list)
        self.in_flight: dict[int, tuple[int, int]] = {}
        # Slots (all lanes, retry lane) by webhook of rows still leased whose requests have
        # ended with a success not yet written (``claim``): free, though the rows are held.
        self.held_by_finished: Mapping[int, tuple[int, int]] = {}
        self.taken: list[Claimed] = []
        self.retry_taken = 0
        # Held webhooks (holds.py) by id: the first fan-out batch each has no rows for, and
        # the batch its hold ends at (None: open, its new events are owed too).
        self.holds: dict[int, tuple[int, int | None]] | None = None
        # By webhook, when the first of its leases still held runs out.
        self.earliest_lease_end: dict[int, datetime.datetime] = {}

    def run(self, fan_out_limit: int) -> list[Claimed]:
        self._count_in_flight()
        self._exclude_known_full()
        if self.any_rate_limited:
            self._exclude_rate_blocked()
        self._release_held()
        batch = max(1, int(app_settings.BATCH_SIZE))
        holds_new_rows = sql.supported(self.using)
        if not holds_new_rows:
            # New rows cannot be created held here: create them due, and scan them below.
            self._fan_out(fan_out_limit)
        # Rows already due go before new events' (each lane in due order).
        retry_left = self._scan(Lane.RETRY, min(batch, self.capacity.retry), borrowing=False)
        self._scan(Lane.FIRST, batch, borrowing=False)
        if holds_new_rows:
            self._fan_out(fan_out_limit)
        if retry_left or self.retry_share_used:
            # Retries borrow what first attempts left (rows turned away for their share
            # are still due).
            self._scan(Lane.RETRY, batch, borrowing=True)
        self._settle_skipped()
        self._lease()
        self._save_rate_slots()
        return self.taken

    # --- what is already out -------------------------------------------------------------

    def _count_in_flight(self) -> None:
        counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for webhook_id, lane, n, earliest_end in sql.count_leased(self.using, self.now):
            known = self.earliest_lease_end.get(webhook_id)
            self.earliest_lease_end[webhook_id] = min(known or earliest_end, earliest_end)
            counts[webhook_id][0] += n
            if lane == Lane.RETRY:
                counts[webhook_id][1] += n
        for webhook_id, (total, retry) in self.held_by_finished.items():
            if webhook_id in counts:
                counted = counts[webhook_id]
                counted[0] = max(0, counted[0] - total)
                counted[1] = max(0, counted[1] - retry)
        self.in_flight = {
            webhook_id: (total, retry) for webhook_id, (total, retry) in counts.items()
        }

    def _exclude_known_full(self) -> None:
        """Webhooks already at their cap need no scanning (the common hanging endpoint)."""
        for webhook_id, (total_out, _) in self.in_flight.items():
            webhook = self.webhooks.get(webhook_id)
            if webhook is not None and total_out >= webhook.effective_max_in_flight:
                self.exclude.add(webhook_id)

    def _exclude_rate_blocked(self) -> None:
        horizon = self.now + datetime.timedelta(seconds=RATE_HORIZON_SECONDS)
        self.exclude.update(
            RateLimitState.objects.using(self.using)
            .filter(next_slot_at__gt=horizon, webhook__rate_limit__isnull=False)
            .values_list("webhook_id", flat=True)
        )

    # --- scanning the lanes ----------------------------------------------------------------

    def _room_left(self, lane: str, borrowing: bool) -> int:
        room = self.capacity.total - len(self.taken)
        if lane == Lane.RETRY and not borrowing:
            room = min(room, self.capacity.retry - self.retry_taken)
        return room

    def _scan(self, lane: str, limit: int, *, borrowing: bool) -> bool:
        """Take what this lane may take; returns whether its rows may not all have been
        seen (the scan stopped for room, not for running out of rows)."""
        for _ in range(_SCAN_ROUNDS):
            room = self._room_left(lane, borrowing)
            if room <= 0:
                return True
            # A little over what the webhooks could take (some fill up), in pages small
            # enough that one endpoint's backlog costs little to skip.
            size = min(limit, room * 2, _SCAN_PAGE, self._useful_rows(lane, borrowing))
            exclude = self.exclude
            if lane == Lane.RETRY and not borrowing:
                exclude = exclude | self.retry_share_used
            queues = None
            if not self.sweep:
                queues = self._queues(lane, borrowing, exclude, size)
            candidates = sql.due_rows(
                self.using,
                self.now,
                lane,
                size,
                skip_webhooks=sorted(exclude),
                skip_ids=[c.delivery.pk for c in self.taken],
                queues=queues,
            )
            if not candidates:
                return False
            self._load_webhooks(row[1] for row in candidates)
            for row in candidates:
                if self._room_left(lane, borrowing) <= 0:
                    return True
                self._consider(row, lane, borrowing)
            if len(candidates) < size:
                return False
        return True

    def _queues(
        self, lane: str, borrowing: bool, exclude: set[int], size: int
    ) -> dict[int, int] | None:
        """The room left at each active webhook this claim knows, for a scan of their
        queues; None (walk the lane) when there are too many to read one by one."""
        queues: dict[int, int] = {}
        for webhook_id, webhook in self.webhooks.items():
            if webhook_id in exclude or not webhook.is_active:
                continue
            queues[webhook_id] = min(size, self._room_at(webhook_id, webhook, lane, borrowing))
        if len(queues) > sql.QUEUES_PER_SCAN:
            return None
        return queues

    def _room_at(self, webhook_id: int, webhook: Webhook, lane: str, borrowing: bool) -> int:
        allowance = self.allowances.get(webhook_id)
        if allowance is not None:
            return allowance.room(lane, borrowing)
        return webhook.effective_max_in_flight - self.in_flight.get(webhook_id, (0, 0))[0]

    def _new_rows_would_all_wait(self) -> bool:
        """Would every row a fan-out made now be due, to be leased by a second write later?
        So when no webhook this claim knows has room for a first attempt (or this claim has
        none left) and one of them is active and not held back: a held webhook gets no rows
        from a fan-out at all (holds.py), so events owed to held webhooks alone still go."""
        active = [webhook for webhook in self.webhooks.values() if webhook.is_active]
        if not active:
            return False
        if self._room_left(Lane.FIRST, borrowing=False) > 0 and not all(
            webhook.pk in self.exclude
            or self._room_at(webhook.pk, webhook, Lane.FIRST, borrowing=False) <= 0
            for webhook in active
        ):
            return False
        assert self.holds is not None  # read by _release_held, earlier in the claim
        held_back = {pk for pk, (_, until_batch) in self.holds.items() if until_batch is None}
        return any(webhook.pk not in held_back for webhook in active)

    def _useful_rows(self, lane: str, borrowing: bool, unknown_slack: int | None = None) -> int:
        """About how many due rows this claim could take: the room left at the webhooks it
        knows, plus (by default) a default cap's worth for webhooks it does not."""
        known = 0
        for webhook_id, webhook in self.webhooks.items():
            if webhook_id in self.exclude or not webhook.is_active:
                continue
            known += self._room_at(webhook_id, webhook, lane, borrowing)
        if unknown_slack is None:
            unknown_slack = int(app_settings.ENDPOINT_MAX_IN_FLIGHT)
        return max(1, known + unknown_slack)

    def _consider(self, row: tuple[Any, ...], lane: str, borrowing: bool) -> None:
        *values, body = row
        fields = dict(zip(sql.DUE_COLUMNS, values, strict=True))
        webhook_id = int(fields["webhook_id"])
        webhook = self.webhooks.get(webhook_id)
        if webhook is None:
            return
        if not webhook.is_active:
            self.skipped[webhook_id].append(int(fields["id"]))
            self.exclude.add(webhook_id)
            return
        if webhook_id in self.exclude:
            return
        fields["lane"] = lane
        delivery = Delivery(**fields, status=DeliveryStatus.PENDING)
        delivery._state.adding = False
        delivery._state.db = self.using
        item = self._take(delivery, webhook, lane, borrowing)
        if item is not None:
            item.body = str(body).encode()

    def _take(
        self, delivery: Delivery, webhook: Webhook, lane: str, borrowing: bool
    ) -> Claimed | None:
        """Hold ``delivery`` if every limit allows it; excludes its webhook once full."""
        webhook_id = webhook.pk
        if self.must_end_by is not None and not self._fits(webhook):
            self.exclude.add(webhook_id)
            return None
        allowance = self._allowance(webhook)
        if allowance.room(lane, borrowing) <= 0:
            if allowance.room(Lane.FIRST, borrowing=True) <= 0:
                self.exclude.add(webhook_id)
            else:
                self.retry_share_used.add(webhook_id)
            return None
        item = Claimed(delivery=delivery, webhook=webhook)
        if allowance.rate_slots is not None:
            assert allowance.next_slot is not None
            item.send_at = allowance.next_slot
            allowance.next_slot += datetime.timedelta(seconds=allowance.interval)
            allowance.rate_slots -= 1
        allowance.total -= 1
        if lane == Lane.RETRY:
            allowance.retry -= 1
            if not borrowing:
                self.retry_taken += 1
        allowance.taken.append(item)
        self.taken.append(item)
        return item

    def _fan_out(self, limit: int) -> int:
        """New events become deliveries; those the limits allow are created already held
        by this claim (no second statement to lease them), the rest due. Returns how many
        rows it created."""
        holds_new_rows = sql.supported(self.using)
        if self.capacity.total > 0 and holds_new_rows:
            if not self.sweep and self._new_rows_would_all_wait():
                # The events wait as events until an endpoint has room (their rows are then
                # made leased: one write each) or the next sweep (for webhooks this claim
                # does not know, and disabled ones' skipped rows). Made now they would be due
                # rows, written twice (made, then leased); a second worker claiming beside
                # the one that fills a busy endpoint did that to four rows in five
                # (bench/throughput.py, docs/benchmarks.md item 22).
                return 0
            # About as many events as can be sent now: rows created for a full endpoint
            # wait as due rows, and would cost a second statement to lease later.
            limit = min(limit, max(20, self._useful_rows(Lane.FIRST, False, unknown_slack=0)))
        batch, events = sql.take_pending_events(self.using, limit)
        if not events:
            return 0
        if self.holds is None:
            self.holds = holds.held(self.using)
        # Matched against the webhooks as they are now, not a copy: a webhook created a
        # moment ago gets the events committed after it, one disabled gets them as skipped.
        receiving = subscriptions.receiving_webhooks(self.using)
        active = [webhook for webhook in receiving if webhook.is_active]
        self.webhooks.update((webhook.pk, webhook) for webhook in active)
        self.fresh_webhooks = active
        self._close_holds_of_webhooks_not_receiving(batch, active)
        held: list[Delivery] = []
        # Rows not sent now (their endpoint is full, or it is disabled: created skipped).
        waiting: list[tuple[Event, Webhook]] = []
        for event_id, name, model, created_at, event_body in events:
            event = Event(id=event_id, name=name, model=model, created_at=created_at)
            body = event_body.encode()
            for webhook in subscriptions.matching(receiving, name, model):
                hold = self.holds.get(webhook.pk)
                if hold is not None and hold[1] is None:
                    continue  # owed: a claim makes its row once its queue runs short
                room = self._room_left(Lane.FIRST, borrowing=False) > 0
                if not (
                    webhook.is_active and holds_new_rows and room and webhook.pk not in self.exclude
                ):
                    waiting.append((event, webhook))
                    continue
                row = new_delivery(event, webhook, due_at=created_at)
                item = self._take(row, webhook, Lane.FIRST, borrowing=False)
                if item is None:
                    waiting.append((event, webhook))
                    continue
                item.body = body
                item.leased = True
                row.lease_token = self.token
                row.next_attempt_at = self._lease_until(item)
                held.append(row)
        sql.insert(self.using, held, returning_ids=True)
        self._insert_waiting(waiting)
        self._hold_back_deep_queues(waiting, batch)
        return len(held) + len(waiting)

    def _hold_back_deep_queues(self, waiting: Sequence[tuple[Event, Webhook]], batch: int) -> None:
        """Hold back, from the next batch on, the active webhooks this fan-out left rows
        waiting for that are slow (a request out for ``holds.SLOW_SECONDS``) and whose
        queue is now at its depth (holds.py). A fast endpoint's queue deepens in a burst
        too; held, each of its rows would cost a second write (made due, then leased)
        instead of being made leased."""
        assert self.holds is not None
        candidates = {
            webhook.pk: webhook
            for _, webhook in waiting
            if webhook.is_active and webhook.pk not in self.holds and self._slow(webhook)
        }
        for webhook_id, webhook in candidates.items():
            depth = holds.depth(webhook)
            if holds.queue_depth(self.using, webhook_id, depth) >= depth:
                holds.hold(self.using, webhook_id, batch + 1)
                self.holds[webhook_id] = (batch + 1, None)

    def _close_holds_of_webhooks_not_receiving(self, batch: int, active: Sequence[Webhook]) -> None:
        """A held webhook disabled, or deactivated in settings, gets this batch's rows from
        the fan-out again (skipped, or none): its hold owes only the batches before, and
        is settled by sweeps (``_release_held``)."""
        assert self.holds is not None
        active_ids = {webhook.pk for webhook in active}
        for webhook_id, (from_batch, until_batch) in list(self.holds.items()):
            if until_batch is None and webhook_id not in active_ids:
                holds.close(self.using, webhook_id, batch)
                self.holds[webhook_id] = (from_batch, batch)

    def _slow(self, webhook: Webhook) -> bool:
        """Has one of the webhook's requests been out for ``holds.SLOW_SECONDS``?"""
        earliest_end = self.earliest_lease_end.get(webhook.pk)
        if earliest_end is None:
            return False
        sent_by = self.now - datetime.timedelta(seconds=holds.SLOW_SECONDS)
        # A lease ends lease_seconds after its claim (longer for a rate-limited row's
        # wait, which only makes it look younger).
        return earliest_end - datetime.timedelta(seconds=lease_seconds(webhook)) <= sent_by

    def _release_held(self) -> None:
        """Make the deliveries of held webhooks' owed events, oldest batch first: up to its
        depth for a webhook with room, as skipped for a disabled one (holds.py)."""
        self.holds = holds.held(self.using)
        # A webhook at its cap has no room (the usual case: the hold is for an endpoint that
        # hangs); one disabled since the caller's copy was read is found by a sweep.
        candidates = [webhook_id for webhook_id in self.holds if webhook_id not in self.exclude]
        if not candidates:
            return
        # As they are now, not the caller's copy: one disabled a moment ago gets skipped rows.
        fresh = {
            webhook.pk: webhook
            for webhook in Webhook.objects.using(self.using).filter(id__in=candidates)
        }
        for webhook_id, (from_batch, until_batch) in sorted(
            self.holds.items(), key=lambda item: item[1][0]
        ):
            webhook = fresh.get(webhook_id)
            if webhook is None:
                continue  # at its cap, or deleted since (its hold went with it)
            if webhook.is_active:
                depth = holds.depth(webhook)
                room = depth - holds.queue_depth(self.using, webhook_id, depth)
                if room <= 0:
                    continue
            elif self.sweep:
                # Skipped rows only in a sweep (once a second a run): a webhook disabled
                # after a long outage is owed millions, and each claim holds the lock.
                room = holds.SKIP_BATCH
            else:
                continue
            events, caught_up = holds.owed_events(self.using, from_batch, room, until_batch)
            waiting = [
                (Event(id=event_id, name=name, model=model, created_at=created_at), webhook)
                for event_id, name, model, created_at, _ in events
                if subscriptions.is_subscribed(webhook.events, webhook.models, name, model)
            ]
            self._insert_waiting(waiting)
            if caught_up:
                del self.holds[webhook_id]
                holds.move_on(self.using, webhook_id, None)
            elif events:
                next_owed = int(events[-1][4]) + 1
                self.holds[webhook_id] = (next_owed, until_batch)
                holds.move_on(self.using, webhook_id, next_owed)

    def _insert_waiting(self, waiting: Sequence[tuple[Event, Webhook]]) -> None:
        """The fan-out's rows that wait (due) or are settled already (skipped). On
        PostgreSQL the server builds them from one template row per webhook: they need no
        object here, and a row per object was most of what a second, hanging subscriber
        cost every event (``sql.insert_for_events``)."""
        if not sql.inserts_from_events(self.using):
            rows = [
                new_delivery(event, webhook, due_at=event.created_at) for event, webhook in waiting
            ]
            sql.insert(self.using, rows)
            return
        templates: dict[int, Delivery] = {}
        for event, webhook in waiting:
            if webhook.pk not in templates:
                templates[webhook.pk] = new_delivery(event, webhook, due_at=event.created_at)
        sql.insert_for_events(
            self.using, [(event.id, webhook.pk) for event, webhook in waiting], templates
        )

    def _fits(self, webhook: Webhook) -> bool:
        assert self.must_end_by is not None
        longest = webhook.effective_timeout + (RATE_HORIZON_SECONDS if webhook.rate_limit else 0)
        return self.now + datetime.timedelta(seconds=longest) <= self.must_end_by

    def _load_webhooks(self, ids: Iterable[int]) -> None:
        missing = {webhook_id for webhook_id in ids if webhook_id not in self.webhooks}
        if missing:
            for webhook in Webhook.objects.using(self.using).filter(id__in=missing):
                self.webhooks[webhook.pk] = webhook

    def _allowance(self, webhook: Webhook) -> _Allowance:
        allowance = self.allowances.get(webhook.pk)
        if allowance is not None:
            return allowance
        cap = webhook.effective_max_in_flight
        total_out, retry_out = self.in_flight.get(webhook.pk, (0, 0))
        retry_cap = math.floor(cap * float(app_settings.RETRY_SHARE))
        allowance = _Allowance(total=cap - total_out, retry=retry_cap - retry_out)
        if webhook.rate_limit:
            self._rate_slots(webhook, allowance)
        self.allowances[webhook.pk] = allowance
        return allowance

    def _rate_slots(self, webhook: Webhook, allowance: _Allowance) -> None:
        """The send slots of the next RATE_HORIZON_SECONDS still free for ``webhook``."""
        assert webhook.rate_limit
        interval = 1.0 / float(webhook.rate_limit)
        state = RateLimitState.objects.using(self.using).filter(webhook_id=webhook.pk).first()
        first = max(state.next_slot_at, self.now) if state else self.now
        horizon = self.now + datetime.timedelta(seconds=RATE_HORIZON_SECONDS)
        free = (horizon - first).total_seconds()
        allowance.rate_slots = int(free / interval) + 1 if free >= 0 else 0
        allowance.next_slot = first
        allowance.interval = interval

    # --- writing the claim -----------------------------------------------------------------

    def _settle_skipped(self) -> None:
        for webhook_id, ids in self.skipped.items():
            webhook = self.webhooks[webhook_id]
            reason = webhook.disabled_reason or "The webhook is disabled."
            Delivery.objects.using(self.using).filter(id__in=ids).due(self.now).update(
                status=DeliveryStatus.SKIPPED,
                last_error=f"Skipped: {reason}"[:500],
                lease_token="",
                next_attempt_at=None,
                next_trigger=Trigger.AUTOMATIC,
                completed_at=self.now,
            )

    def _lease_until(self, item: Claimed) -> datetime.datetime:
        wait = (item.send_at - self.now).total_seconds() if item.send_at else 0.0
        seconds = lease_seconds(item.webhook, max(0.0, wait))
        return self.now + datetime.timedelta(seconds=seconds)

    def _lease(self) -> None:
        scanned = [item for item in self.taken if not item.leased]
        by_until: dict[datetime.datetime, list[int]] = defaultdict(list)
        for item in scanned:
            by_until[self._lease_until(item)].append(item.delivery.pk)
        leased = 0
        for until, ids in by_until.items():
            leased += sql.lease(self.using, ids, self.token, until, self.now)
        if leased != len(scanned):
            # Under the claim lock nobody else can take a due row; a mismatch means a row
            # changed outside it (an operator's retry racing us). Keep only what we hold.
            held = set(
                Delivery.objects.using(self.using)
                .filter(id__in=[c.delivery.pk for c in scanned], lease_token=self.token)
                .values_list("id", flat=True)
            )
            self.taken = [item for item in self.taken if item.leased or item.delivery.pk in held]
        for item in self.taken:
            item.delivery.lease_token = self.token

    def _save_rate_slots(self) -> None:
        for webhook_id, allowance in self.allowances.items():
            if allowance.next_slot is None or not allowance.taken:
                continue
            RateLimitState.objects.using(self.using).update_or_create(
                webhook_id=webhook_id, defaults={"next_slot_at": allowance.next_slot}
            )


def rows_waiting(
    now: datetime.datetime,
    *,
    using: str,
    webhooks: Sequence[int] | Mapping[int, int] | None = None,
) -> bool:
    """Is there anything a sender could do: events to fan out, due deliveries, or events a
    held webhook is owed (of ``webhooks`` only, if given: with a mapping, each one's
    ``holds.depth``; a plain list means the least)?"""
    depths = None
    if webhooks is not None:
        if isinstance(webhooks, Mapping):
            depths = dict(webhooks)
        else:
            depths = {webhook_id: holds.MIN_DEPTH for webhook_id in webhooks}
    probe = sql.work_waiting(using, now, depths)
    return probe.work or (probe.held and holds.releasable(using, depths))
