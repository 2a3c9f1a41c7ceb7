"""The delivery engine: one worker task's run, many requests in flight.

A run claims due rows (``claims.claim``), signs them and hands them to the HTTP loop
(``http.submit_all``), then records what comes back (``delivery.Recorder``) and claims again as
slots free up. Database reads and writes stay on this thread and are batched; only the
requests run concurrently, on the process's event loop. The run:

* keeps at most ``MAX_IN_FLIGHT`` requests out, and every endpoint's claim limits hold
  (``claims``), so a hanging endpoint occupies its own slots and nothing else;
* stops claiming after ``TASK_SECONDS`` and asks for another run if work is left. In a
  worker process, what is still in flight then is settled by a thread of that process (each
  attempt ends by its deadline) while the task ends at once: a worker that waited for a
  hanging endpoint's requests would take no new work for up to their timeout, so a hanging
  endpoint would slow every other one (the same worker's next run counts those requests
  against its ``MAX_IN_FLIGHT``). The process waits for them before it exits, so a graceful
  stop still records everything and takes seconds;
* lingers ``LINGER_SECONDS`` when it runs dry, looking for rows committed after the wake-up
  that started it (the writers coalesce their wake-ups; see ``tasks.wake``).

A row is held under the run's lease token from the claim until its outcome is written; the
lease covers the row's wait for a rate-limit slot, its deadline and the write, so a row is
never held past its lease while it is being sent.
"""

from __future__ import annotations

import datetime
import logging
import math
import multiprocessing
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import util as multiprocessing_util

from django.db import DEFAULT_DB_ALIAS, connections
from django.utils import timezone
from django_q.conf import Conf

from webhooks_app import claims, delivery, http, subscriptions
from webhooks_app.conf import app_settings
from webhooks_app.http import AttemptResult, OutgoingRequest
from webhooks_app.models import Lane, Webhook

logger = logging.getLogger("webhooks_app.engine")

# How long a run that found nothing keeps looking; longer than tasks.WAKE_COALESCE_SECONDS
# plus one poll, so a row whose wake-up was coalesced into an earlier one is always found.
LINGER_SECONDS = 0.25
# Between two claims while slots are free but the last claim found nothing.
POLL_SECONDS = 0.02
# Claims read the queues of the webhooks a run knows; this often (and first) one reads every
# due row, for rows of webhooks the run's copy does not know.
SWEEP_SECONDS = 1.0
# A run that found every endpoint it knows full or rate-limited looks again this often (and
# at once when one of its own requests ends): a claim then would only count what is out and
# leave new events pending (claims.py), while holding the claim lock the run that keeps
# the endpoint busy needs. New events waiting on a slot freed elsewhere (another worker's
# request, a lease run out) are taken within this time; the endpoint's due rows, which
# probes between sweeps skip, at the next sweep.
BLOCKED_LOOK_SECONDS = 0.1
# Outcomes are written when this many are waiting, or when the oldest has waited this long
# (a row's slot at its endpoint is free again once its outcome is written, or, to the run
# holding it, once its request has ended in a success: see claims.claim).
FLUSH_ROWS = 100
FLUSH_SECONDS = 0.02
# A request out this long is not expected back within FLUSH_SECONDS: outcomes waiting for
# more to join them do not wait for it (a hanging endpoint's requests are always out).
SLOW_REQUEST_SECONDS = 0.1
# After a claim failed (the database gone, a lock timeout, a row it refuses to write), the
# next waits this long: outcomes waiting make a claim due at once, so a failure that
# persists would otherwise become a hot loop against the database.
CLAIM_RETRY_SECONDS = 0.5


@dataclass
class _InFlight:
    claimed: claims.Claimed
    request: OutgoingRequest
    started: http.Started
    # The submit_all() call that started it: an outcome reported for this row by an
    # earlier request (ended by the guard, then sent again) is not this one's.
    batch: object
    # Monotonic time after which the engine stops waiting and records a timeout itself.
    guard_at: float
    # Monotonic time the request goes out (after its rate-limit wait).
    starts_at: float


# Runs of this process that stopped claiming with requests still out, each settled by its
# own thread (see the module docstring).
_settling: dict[Run, threading.Thread] = {}
_settling_lock = threading.Lock()
_exit_hook_installed = False


def settling_in_flight(excluding: Run | None = None) -> int:
    """Requests this process's settling runs still have out."""
    with _settling_lock:
        runs = [run for run in _settling if run is not excluding]
    return sum(len(run.in_flight) for run in runs)


def wait_for_settling(timeout: float | None = None) -> bool:
    """Wait until every settling run of this process has written its outcomes (each ends by
    its attempts' deadlines); True when none is left."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with _settling_lock:
            threads = list(_settling.values())
        if not threads:
            return True
        for thread in threads:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(left)
        if deadline is not None and time.monotonic() >= deadline:
            with _settling_lock:
                return not _settling


def _install_exit_hook() -> None:
    """Before a worker process exits (a graceful stop, a recycle) its settling runs finish:
    multiprocessing runs these finalizers in the child, where atexit does not."""
    global _exit_hook_installed
    with _settling_lock:
        if _exit_hook_installed:
            return
        _exit_hook_installed = True
    multiprocessing_util.Finalize(None, wait_for_settling, exitpriority=100)


def in_worker_process() -> bool:
    """A qcluster worker (a child process), where a run's last requests may outlive its task;
    elsewhere (sync mode, a test, a command) a run settles them itself."""
    return multiprocessing.parent_process() is not None and not Conf.SYNC


class Run:
    """One run of the engine in this thread; ``run()`` returns how many rows it settled
    (those it left to a settling thread are not counted)."""

    def __init__(
        self,
        *,
        budget: float | None = None,
        linger: float = LINGER_SECONDS,
        using: str = DEFAULT_DB_ALIAS,
        settle_in_background: bool | None = None,
    ) -> None:
        self.token = uuid.uuid4().hex
        self.settle_in_background = (
            in_worker_process() if settle_in_background is None else settle_in_background
        )
        self.using = using
        self.budget = float(app_settings.TASK_SECONDS if budget is None else budget)
        self.linger = linger
        self.max_in_flight = max(1, int(app_settings.MAX_IN_FLIGHT))
        self.retry_slots = math.floor(self.max_in_flight * float(app_settings.RETRY_SHARE))
        self.recorder = delivery.Recorder(self.token, using=using)
        self.in_flight: dict[int, _InFlight] = {}
        # No request in flight has its guard due before this (it may be earlier than the
        # earliest left: rows that ended leave it in place until it passes). Each turn of
        # the loop reads it instead of every request in flight, a hanging endpoint's too.
        self.next_guard_at = math.inf
        # (delivery id, submit_all() call, outcome) of each request as it ends.
        self.done: queue.SimpleQueue[tuple[int, object, AttemptResult | BaseException]] = (
            queue.SimpleQueue()
        )
        self.stopped_early = False
        self.webhooks: dict[int, Webhook] = {}
        self.webhooks_read_at = -math.inf
        # Whether the last claim found something: then the next one need not probe first.
        self.last_claim_found = False
        self.last_sweep = -math.inf
        self.claim_again_at = -math.inf
        # Webhooks the last claim found full or rate-limited: probes between sweeps skip
        # them (a request of one that ends here frees a slot: it is taken out again).
        self.blocked: set[int] = set()
        # When this run's last claim was made (monotonic time).
        self.looked_at = -math.inf
        # django-q2 kills a task at Q_CLUSTER["timeout"]: claim nothing that could outlast it.
        self.must_end_by: datetime.datetime | None = None
        if Conf.TIMEOUT and not Conf.SYNC:
            margin = claims.RECORDING_SLACK_SECONDS
            self.must_end_by = timezone.now() + datetime.timedelta(
                seconds=float(Conf.TIMEOUT) - margin
            )

    def run(self) -> int:
        start = time.monotonic()
        stop_claiming_at = start + self.budget
        next_claim_at = start
        last_claim_at = -1.0
        # Since when nothing has been in flight or waiting to be written (None: busy).
        idle_since: float | None = None
        while True:
            now = time.monotonic()
            self._collect()
            self._guard(now)
            claiming = now < stop_claiming_at
            flush_due = self._should_flush(now, claiming)
            if not self.in_flight and idle_since is None:
                # Just ran dry: look again at once before deciding to linger or stop.
                idle_since = now
                next_claim_at = now
            backing_off = now < self.claim_again_at
            if claiming and now >= next_claim_at and self._all_blocked(now):
                # Nothing a claim could take yet (BLOCKED_LOOK_SECONDS); a run that has
                # lingered still ends only after a claim (below).
                next_claim_at = now + POLL_SECONDS
            if (
                claiming
                and self._free() > 0
                and not backing_off
                and (now >= next_claim_at or flush_due)
            ):
                # A claim writes the outcomes waiting first, in its own transaction, unless
                # all are successes: then they are written once the new requests are out.
                last_claim_at = now
                free = self._free()
                found = self._claim()
                if found:
                    idle_since = None
                # A claim that filled every free slot may leave more; one that did not has
                # met a limit (or run dry): look again when slots free up, or after a poll.
                next_claim_at = time.monotonic() + (0 if found >= free else POLL_SECONDS)
                next_claim_at = max(next_claim_at, self.claim_again_at)
            elif flush_due and not backing_off:
                self._flush()
                next_claim_at = min(next_claim_at, time.monotonic())
            if not claiming and self.in_flight and self.settle_in_background:
                self._flush()
                self._settle_in_background()
                self.stopped_early = claims.rows_waiting(timezone.now(), using=self.using)
                return self.recorder.recorded
            if not self.in_flight and not len(self.recorder):
                if not claiming:
                    self.stopped_early = claims.rows_waiting(timezone.now(), using=self.using)
                    break
                if idle_since is not None and last_claim_at >= idle_since + self.linger:
                    break  # a claim made once the run had lingered found nothing either
            # Not before a failed claim's pause ends: a past claim time would make the wait
            # return at once, and the loop spin until then.
            self._wait(max(next_claim_at, self.claim_again_at) if claiming else None)
        self._flush()
        return self.recorder.recorded

    def _flush(self) -> None:
        self.recorder.flush()
        self._forget_disabled()

    def _settle(self) -> None:
        """Collect, guard and write until nothing is in flight or waiting to be written."""
        while self.in_flight or len(self.recorder):
            now = time.monotonic()
            self._collect()
            self._guard(now)
            if self._should_flush(now, claiming=False):
                self._flush()
            if self.in_flight:
                self._wait(None)
        self._flush()

    def _settle_in_background(self) -> None:
        _install_exit_hook()
        thread = threading.Thread(
            target=self._settle_then_close,
            name=f"webhooks-settle-{self.token[:8]}",
            daemon=True,
        )
        with _settling_lock:
            _settling[self] = thread
        thread.start()

    def _settle_then_close(self) -> None:
        try:
            self._settle()
        except Exception:
            # Rows not written keep their lease, which runs out; then they are due again.
            logger.exception("settling the last requests of a delivery run failed")
        finally:
            connections[self.using].close()
            with _settling_lock:
                _settling.pop(self, None)

    def _forget_disabled(self) -> None:
        for webhook_id in self.recorder.disabled_since_start:
            self.webhooks.pop(webhook_id, None)

    def _active_webhooks(self) -> dict[int, Webhook]:
        """This run's copy of the active webhooks, read again every
        SUBSCRIPTION_CACHE_SECONDS (a changed URL or secret is used from then on)."""
        now = time.monotonic()
        if now - self.webhooks_read_at >= float(app_settings.SUBSCRIPTION_CACHE_SECONDS):
            self.webhooks = {w.pk: w for w in subscriptions.active_webhooks(self.using)}
            self.webhooks_read_at = now
        return self.webhooks

    # --- claiming and sending ----------------------------------------------------------------

    def _all_blocked(self, now: float) -> bool:
        """Is every active webhook this run knows full or rate-limited, as its last claim
        found, a moment ago (``BLOCKED_LOOK_SECONDS``), with no sweep and no write due?"""
        if not self.blocked or len(self.recorder) or now - self.looked_at >= BLOCKED_LOOK_SECONDS:
            return False
        if now - self.last_sweep >= SWEEP_SECONDS:
            return False
        active = [webhook_id for webhook_id, webhook in self.webhooks.items() if webhook.is_active]
        return bool(active) and all(webhook_id in self.blocked for webhook_id in active)

    def _free(self) -> int:
        return self.max_in_flight - len(self.in_flight) - settling_in_flight(excluding=self)

    def _claim(self) -> int:
        retry_out = sum(
            1 for entry in self.in_flight.values() if entry.claimed.delivery.lane == Lane.RETRY
        )
        capacity = claims.Capacity(
            total=self._free(), retry=max(0, min(self._free(), self.retry_slots - retry_out))
        )
        batch = max(1, int(app_settings.BATCH_SIZE))
        self.looked_at = time.monotonic()
        sweep = self.looked_at - self.last_sweep >= SWEEP_SECONDS
        if sweep:
            self.last_sweep = self.looked_at
        try:
            claimed = claims.claim(
                self.token,
                capacity,
                using=self.using,
                fan_out_limit=batch,
                must_end_by=self.must_end_by,
                webhooks=self._active_webhooks(),
                probe=not self.last_claim_found,
                recorder=self.recorder,
                sweep=sweep,
                blocked=self.blocked,
            )
        except Exception:
            # A lost database connection or a lock timeout: the rows stay due, another pass
            # (or another worker) takes them.
            logger.exception("claiming deliveries failed; trying again shortly")
            self.last_claim_found = False
            self.claim_again_at = time.monotonic() + CLAIM_RETRY_SECONDS
            if self.recorder.slots_of_successes() is not None:
                # Successes the failed claim counted free: written now, not counted free
                # again by claim after claim while their leases run down. (Other outcomes
                # wait for the next claim, which writes them first.)
                self._write_outcomes()
            return 0
        self.last_claim_found = bool(claimed)
        self._forget_disabled()
        try:
            self._send(claimed)
        finally:
            if len(self.recorder):
                # Successes the claim counted free without writing them: written now, while
                # the new requests are out (and even if handing them over failed).
                self._write_outcomes()
        # The claim (or the write above) wrote the last outcomes; their notices go out now
        # that the new rows are on their way (a slow mail server must not hold rows past
        # their lease).
        self.recorder.announce()
        return len(claimed)

    def _write_outcomes(self) -> None:
        try:
            self._flush()
        except Exception:
            # Kept in the recorder (their rows stay leased): the next claim writes them first.
            logger.exception("writing outcomes failed; trying again shortly")
            self.claim_again_at = time.monotonic() + CLAIM_RETRY_SECONDS

    def _send(self, claimed: Sequence[claims.Claimed]) -> None:
        """Sign the claimed rows and hand their requests to the HTTP loop together."""
        built: list[tuple[claims.Claimed, OutgoingRequest]] = []
        for item in claimed:
            try:
                request = delivery.build_request(item.webhook, item.delivery.event_id, item.body)
            except Exception as exc:
                # A row that cannot even be attempted (a malformed webhook, a broken setting)
                # must still reach an outcome, or it would come back and fail for ever.
                logger.exception("could not build the request of delivery %s", item.delivery.pk)
                self.recorder.add_result(item.delivery, item.webhook, None, exc)
                continue
            built.append((item, request))
        if not built:
            return
        # One reading of both clocks for the whole batch: a rate-limit slot's wait measured
        # against one and applied from a later reading of the other would send late, and
        # narrow the gap to the next slot.
        wall, now = timezone.now(), time.monotonic()
        starts_at = [
            now if item.send_at is None else now + max(0.0, (item.send_at - wall).total_seconds())
            for item, _ in built
        ]
        pks = [item.delivery.pk for item, _ in built]
        batch = object()
        done = self.done

        def finished(index: int, outcome: AttemptResult | BaseException) -> None:
            done.put((pks[index], batch, outcome))

        handles = http.submit_all(
            [
                (request, None if item.send_at is None else start)
                for (item, request), start in zip(built, starts_at, strict=True)
            ],
            finished,
        )
        for (item, request), start, started in zip(built, starts_at, handles, strict=True):
            guard_at = start + request.timeout + http.GUARD_SECONDS
            self.in_flight[item.delivery.pk] = _InFlight(
                item, request, started, batch, guard_at, start
            )
            self.next_guard_at = min(self.next_guard_at, guard_at)

    # --- collecting and recording ------------------------------------------------------------

    def _collect(self) -> None:
        while True:
            try:
                ended = self.done.get_nowait()
            except queue.Empty:
                return
            self._finish(*ended)

    def _finish(self, pk: int, batch: object, outcome: AttemptResult | BaseException) -> None:
        entry = self.in_flight.get(pk)
        if entry is None or entry.batch is not batch:
            return  # already recorded by the guard
        del self.in_flight[pk]
        self.blocked.discard(entry.claimed.webhook.pk)
        result: AttemptResult | Exception
        if isinstance(outcome, (AttemptResult, Exception)):
            result = outcome
        else:  # a BaseException that escaped the attempt: still an outcome to record
            result = RuntimeError(f"the attempt ended with {outcome!r}")
        self.recorder.add_result(
            entry.claimed.delivery, entry.claimed.webhook, entry.request, result
        )

    def _guard(self, now: float) -> None:
        """Record attempts the event loop did not end by their deadline (a stalled loop)."""
        if now < self.next_guard_at:
            return
        late = [pk for pk, entry in self.in_flight.items() if now >= entry.guard_at]
        for pk in late:
            entry = self.in_flight.pop(pk)
            entry.started.cancel()
            self.blocked.discard(entry.claimed.webhook.pk)
            result = AttemptResult(
                started_at=timezone.now(),
                duration_ms=int(entry.request.timeout * 1000),
                error_class="Timeout",
                error_message=f"Timed out after {entry.request.timeout:g} s (the sender gave up)",
            )
            self.recorder.add_result(
                entry.claimed.delivery, entry.claimed.webhook, entry.request, result
            )
        self.next_guard_at = min(
            (entry.guard_at for entry in self.in_flight.values()), default=math.inf
        )

    def _should_flush(self, now: float, claiming: bool) -> bool:
        waiting = len(self.recorder)
        if not waiting:
            return False
        if waiting >= FLUSH_ROWS or not claiming or not self._any_back_soon(now):
            return True
        first = self.recorder.first_added_at
        return first is not None and now - first >= FLUSH_SECONDS

    def _any_back_soon(self, now: float) -> bool:
        """Whether a request in flight may still end within FLUSH_SECONDS, which is what
        waiting to write outcomes together is for. Requests out for SLOW_REQUEST_SECONDS
        do not count: if they did, a hanging endpoint's requests (always out) would hold
        every other endpoint's outcomes, and so their next rows, by FLUSH_SECONDS a round
        trip (bench/isolation.py measured the fast endpoint at 0.65-0.9 of its rate)."""
        young_since = now - SLOW_REQUEST_SECONDS
        # A request still waiting for its rate-limit slot is not out yet: it is not back
        # within FLUSH_SECONDS either. Newest first: the oldest are a hanging endpoint's.
        return any(
            young_since < entry.starts_at <= now for entry in reversed(self.in_flight.values())
        )

    def _wait(self, next_claim_at: float | None) -> None:
        """Sleep until something finishes, a claim is due, a flush is due, or a guard fires."""
        now = time.monotonic()
        until = now + FLUSH_SECONDS
        if next_claim_at is not None and self._free() > 0:
            until = min(until, next_claim_at)
        if self.in_flight:
            until = min(until, self.next_guard_at)
        if self.recorder.first_added_at is not None and now >= self.claim_again_at:
            until = min(until, self.recorder.first_added_at + FLUSH_SECONDS)
        if not self.in_flight and next_claim_at is None:
            return
        timeout = max(0.0, until - now)
        try:
            ended = self.done.get(timeout=timeout) if timeout > 0 else self.done.get_nowait()
        except queue.Empty:
            return
        self._finish(*ended)
