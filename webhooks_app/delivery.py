"""What an attempt is and what it means: the request we build, and the outcome we record.

``build_request`` signs one attempt; ``http`` sends it; ``Recorder`` turns results into
DeliveryAttempt rows and Delivery outcomes, written in bulk. Nothing here does HTTP or
touches the queue, so the engine, a test send and a management command record alike.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from webhooks_app import __version__, failures, http, retry, signing, sql, subscriptions
from webhooks_app.conf import app_settings
from webhooks_app.http import AttemptResult, OutgoingRequest
from webhooks_app.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Lane,
    Trigger,
    Webhook,
)
from webhooks_app.rules import PROTECTED_HEADERS

logger = logging.getLogger("webhooks_app.delivery")

USER_AGENT = f"django-webhooks/{__version__}"
REDACTED = "[redacted]"
_SENSITIVE_HEADER_MARKERS = ("auth", "cookie", "token", "secret", "key", "password")
ERROR_MESSAGE_LIMIT = http.ERROR_MESSAGE_LIMIT

__all__ = [
    "PROTECTED_HEADERS",
    "AttemptResult",
    "OutgoingRequest",
    "Recorder",
    "build_request",
    "redact_headers",
]


def build_request(webhook: Webhook, event_id: str, body: bytes) -> OutgoingRequest:
    """Headers and signatures for one attempt; the timestamp is this attempt's."""
    timestamp = int(time.time())
    secrets = webhook.signing_secrets()
    headers: dict[str, str] = {}
    signature_header = webhook.effective_signature_header
    for name, value in (webhook.headers or {}).items():
        lowered = str(name).lower()
        if lowered not in PROTECTED_HEADERS and lowered != signature_header.lower():
            headers[str(name)] = str(value)
    headers.update(
        {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signing.standard_signature_header(
                secrets, event_id, timestamp, body
            ),
            signature_header: webhook.effective_signature_prefix
            + signing.sign_hex(secrets[0], body),
        }
    )
    return OutgoingRequest(
        method=webhook.method,
        url=webhook.url,
        headers=headers,
        body=body,
        timeout=webhook.effective_timeout,
    )


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers as they may be stored and shown: credentials in custom headers hidden.

    Signatures stay: they are not secrets, and operators compare them with the receiver's.
    """
    redacted = {}
    for name, value in headers.items():
        lowered = name.lower()
        sensitive = lowered not in PROTECTED_HEADERS and any(
            marker in lowered for marker in _SENSITIVE_HEADER_MARKERS
        )
        redacted[name] = REDACTED if sensitive and "signature" not in lowered else value
    return redacted


def restore_redacted(submitted: Mapping[str, str], stored: Mapping[str, str]) -> dict[str, str]:
    """Headers sent back by someone who read them redacted: a value still ``[redacted]``
    keeps the stored credential they could not see (the API and the admin form both)."""
    return {
        name: stored[name] if text == REDACTED and name in stored else text
        for name, text in submitted.items()
    }


# --- what an attempt means -----------------------------------------------------------------


@dataclass
class Decision:
    outcome: str
    status: str
    next_attempt_at: datetime.datetime | None
    disable_reason: str = ""


def decide(delivery: Delivery, result: AttemptResult, now: datetime.datetime) -> Decision:
    """What an attempt's result means for its delivery (``delivery.attempts`` already counts
    this attempt)."""
    if result.succeeded:
        return Decision(DeliveryAttempt.Outcome.SUCCEEDED, DeliveryStatus.SUCCEEDED, None)
    if result.status_code == 410:
        reason = f"The endpoint answered 410 Gone on {now:%Y-%m-%d %H:%M:%S} UTC."
        return Decision(DeliveryAttempt.Outcome.DISABLED, DeliveryStatus.FAILED, None, reason)
    if result.error_class == "Blocked":
        # Retrying cannot help until someone changes the settings or the URL: fail visibly,
        # once, instead of knocking on a forbidden address on every retry.
        return Decision(DeliveryAttempt.Outcome.FAILED, DeliveryStatus.FAILED, None)
    if delivery.attempts >= delivery.max_attempts:
        return Decision(DeliveryAttempt.Outcome.FAILED, DeliveryStatus.FAILED, None)
    delay: float | None = None
    if result.status_code in (429, 503):
        retry_after = retry.parse_retry_after(_header(result.response_headers, "Retry-After"), now)
        if retry_after is not None:
            delay = retry.bounded_retry_after(retry_after)
    if delay is None:
        delay = retry.retry_delay(delivery.attempts)
    return Decision(
        DeliveryAttempt.Outcome.RETRYING,
        DeliveryStatus.PENDING,
        now + datetime.timedelta(seconds=delay),
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    return next((value for key, value in headers.items() if key.lower() == lowered), None)


def apply_result(
    delivery: Delivery, webhook: Webhook, request: OutgoingRequest, result: AttemptResult
) -> DeliveryAttempt:
    """Update ``delivery`` in memory for this attempt's result; returns the unsaved record."""
    now = timezone.now()
    trigger = delivery.next_trigger
    delivery.attempts += 1
    decision = decide(delivery, result, now)
    delivery.last_attempt_at = result.started_at
    delivery.last_status_code = result.status_code
    delivery.last_duration_ms = result.duration_ms
    error = decision.disable_reason or ("" if result.succeeded else result.summary)
    settle(delivery, decision.status, error, decision.next_attempt_at)
    _log(webhook, delivery, result, decision)
    return DeliveryAttempt(
        delivery=delivery,
        webhook_id=delivery.webhook_id,
        number=delivery.attempts,
        trigger=trigger,
        outcome=decision.outcome,
        started_at=result.started_at,
        duration_ms=result.duration_ms,
        request_method=request.method,
        request_url=request.url,
        request_headers=redact_headers(request.headers),
        response_status=result.status_code,
        # A receiver's Set-Cookie or token header is no more ours to show than our own.
        response_headers=redact_headers(result.response_headers),
        response_body=result.response_body,
        error_class=result.error_class,
        error_message=result.error_message,
        summary=result.summary,
    )


def unattemptable(delivery: Delivery, webhook: Webhook, exc: Exception) -> DeliveryAttempt:
    """A failed, recorded outcome for a delivery whose request could not be built or judged;
    it stays visible and can be retried once the cause is fixed."""
    now = timezone.now()
    trigger = delivery.next_trigger
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.last_status_code = None
    settle(delivery, DeliveryStatus.FAILED, f"Could not send: {type(exc).__name__}: {exc}"[:500])
    return DeliveryAttempt(
        delivery=delivery,
        webhook_id=delivery.webhook_id,
        number=delivery.attempts,
        trigger=trigger,
        outcome=DeliveryAttempt.Outcome.FAILED,
        started_at=now,
        duration_ms=0,
        request_method=str(webhook.method),
        request_url=str(webhook.url),
        request_headers={},
        error_class=type(exc).__name__,
        error_message=str(exc)[:ERROR_MESSAGE_LIMIT],
        summary=f"Could not send: {type(exc).__name__}: {exc}"[:300],
    )


def settle(
    delivery: Delivery,
    status: str,
    last_error: str,
    next_attempt_at: datetime.datetime | None = None,
) -> None:
    """Put a row at rest (or back in line for its retry): lease cleared."""
    delivery.status = status
    delivery.last_error = last_error[:500]
    delivery.lease_token = ""
    delivery.next_attempt_at = next_attempt_at
    delivery.next_trigger = Trigger.AUTOMATIC
    if status == DeliveryStatus.PENDING:
        delivery.lane = Lane.RETRY
    else:
        delivery.completed_at = timezone.now()


def _log(webhook: Webhook, delivery: Delivery, result: AttemptResult, decision: Decision) -> None:
    if result.succeeded:
        if app_settings.DEBUG:
            logger.info(
                "delivered %s to webhook %s (%s) in %d ms: HTTP %s",
                delivery.event_id,
                webhook.pk,
                webhook.url,
                result.duration_ms,
                result.status_code,
            )
        return
    logger.warning(
        "delivery %s of %s to webhook %s (%s) failed: %s; %s",
        delivery.pk,
        delivery.event_id,
        webhook.pk,
        webhook.url,
        result.summary,
        f"next attempt at {decision.next_attempt_at:%Y-%m-%d %H:%M:%S}"
        if decision.next_attempt_at
        else f"no more attempts ({decision.outcome})",
    )


# --- writing outcomes ----------------------------------------------------------------------


class Recorder:
    """Collects outcomes of rows held by ``lease_token`` and writes them in bulk.

    With ``judge_webhooks=False`` (test sends) the webhook's counters are left alone and a
    410 does not disable it: a manual test says how the endpoint answers, nothing more.
    """

    def __init__(
        self, lease_token: str, using: str = DEFAULT_DB_ALIAS, *, judge_webhooks: bool = True
    ) -> None:
        self.lease_token = lease_token
        self.using = using
        self.judge_webhooks = judge_webhooks
        self.deliveries: list[Delivery] = []
        self.attempts: list[DeliveryAttempt] = []
        self.webhook_results: dict[int, list[bool]] = {}
        self.disabled: dict[int, str] = {}
        # The last failure per webhook in this batch, for a disable reason.
        self.last_errors: dict[int, str] = {}
        self.first_added_at: float | None = None
        # Per webhook, the endpoint slots (all lanes, retry lane) the attempted rows of these
        # outcomes hold until they are written, and whether every one of them succeeded.
        self.slots_held: dict[int, list[int]] = {}
        self.all_succeeded = True
        self.write_failed = False
        self.recorded = 0
        # Webhooks this recorder disabled (a 410), so the sender stops claiming for them.
        self.disabled_since_start: set[int] = set()
        # What write() wrote, until after_commit() says it committed: a rolled-back write
        # is written again by the next one, and tells nobody anything.
        self._written: tuple[int, list[failures.Verdict]] | None = None
        # Notices of committed verdicts, for announce(): sent off the claim's path, so a slow
        # mail server never holds rows a claim has just leased.
        self._notices: list[failures.Verdict] = []

    def __len__(self) -> int:
        return len(self.deliveries)

    def add_result(
        self,
        delivery: Delivery,
        webhook: Webhook,
        request: OutgoingRequest | None,
        result: AttemptResult | Exception,
    ) -> None:
        """One finished attempt (or the exception that kept it from being made)."""
        lane = delivery.lane  # the lane it was claimed in, which its leased row still shows
        if isinstance(result, Exception) or request is None:
            error = result if isinstance(result, Exception) else RuntimeError("no request")
            attempt = unattemptable(delivery, webhook, error)
        else:
            try:
                attempt = apply_result(delivery, webhook, request, result)
            except Exception as exc:
                logger.exception("could not judge the result of delivery %s", delivery.pk)
                attempt = unattemptable(delivery, webhook, exc)
        self.attempts.append(attempt)
        if self.judge_webhooks:
            if attempt.outcome == DeliveryAttempt.Outcome.DISABLED:
                self.disabled[webhook.pk] = delivery.last_error
            ok = attempt.outcome == DeliveryAttempt.Outcome.SUCCEEDED
            self.webhook_results.setdefault(delivery.webhook_id, []).append(ok)
            if not ok:
                self.last_errors[delivery.webhook_id] = attempt_summary(attempt)
        held = self.slots_held.setdefault(delivery.webhook_id, [0, 0])
        held[0] += 1
        if lane == Lane.RETRY:
            held[1] += 1
        if attempt.outcome != DeliveryAttempt.Outcome.SUCCEEDED:
            self.all_succeeded = False
        self._add(delivery)

    def add_skipped(self, delivery: Delivery, reason: str) -> None:
        settle(delivery, DeliveryStatus.SKIPPED, f"Skipped: {reason}")
        self.all_succeeded = False
        self._add(delivery)

    def slots_of_successes(self) -> dict[int, tuple[int, int]] | None:
        """The endpoint slots (all lanes, retry lane) by webhook that these unwritten
        outcomes' rows still hold, when every one of them is a success: a claim may count
        those slots free and leave the outcomes to be written after it (the engine writes
        them while the claim's requests are out). None when there is nothing, or anything
        else (a failure, a 410, a skip): those are written first, so the claim sees what
        they decide (a webhook disabled, a failure policy's verdict)."""
        if not self.deliveries or not self.all_succeeded or self.write_failed:
            return None
        return {webhook_id: (held[0], held[1]) for webhook_id, held in self.slots_held.items()}

    def _add(self, delivery: Delivery) -> None:
        if self.first_added_at is None:
            self.first_added_at = time.monotonic()
        self.deliveries.append(delivery)

    def flush(self) -> int:
        """Write what was collected in one transaction; returns how many rows."""
        if not self.deliveries:
            return 0
        try:
            with transaction.atomic(using=self.using):
                written = self.write()
        except BaseException:
            # A claim must not count these free again while their write keeps failing: it
            # writes them first, and fails before taking any row if the write does.
            self.write_failed = True
            raise
        self.after_commit()
        self.announce()
        return written

    def write(self) -> int:
        """Write what was collected, in the caller's transaction (a claim writes outcomes
        that are not all successes first, so the slots they held count as free and it sees
        what they decide); call ``after_commit()`` once it committed. Returns how many
        rows."""
        self._written = None
        if not self.deliveries:
            return 0
        now = timezone.now()
        count = len(self.deliveries)
        attempts = self.attempts
        # The rows first: those still held are then locked, so a deletion of their webhook
        # (which locks its leased rows: models.py) waits for this to commit.
        written = write_outcomes(self.deliveries, self.lease_token, using=self.using)
        ids = {row.pk for row in self.deliveries}
        if written < len(ids):
            # A row another worker took over still gets its attempt (the request was made);
            # one deleted with its webhook meanwhile has none to get, and its attempt would
            # fail this write on the foreign key again and again.
            existing = set(
                Delivery.objects.using(self.using).filter(pk__in=ids).values_list("pk", flat=True)
            )
            attempts = [attempt for attempt in attempts if attempt.delivery_id in existing]
        sql.insert(self.using, attempts)
        for webhook_id, results in self.webhook_results.items():
            _update_webhook_stats(webhook_id, results, now, self.using)
        verdicts = [
            failures.Verdict(webhook_id, "disabled")
            for webhook_id, reason in self.disabled.items()
            if failures.disable(webhook_id, reason, now, self.using)
        ]
        still_failing = [
            webhook_id
            for webhook_id, results in self.webhook_results.items()
            if not results[-1] and webhook_id not in self.disabled
        ]
        verdicts += failures.judge(still_failing, now, self.using, self.last_errors)
        self._written = (count, verdicts)
        return count

    def disabled_by_write(self) -> set[int]:
        """The webhooks that what write() wrote disables (a 410, the failure policy), before
        it commits: a claim in the same transaction must not send them more."""
        if self._written is None:
            return set()
        return {verdict.webhook_id for verdict in self._written[1] if verdict.kind == "disabled"}

    def after_commit(self) -> None:
        """What write() wrote has committed: forget it, stop claiming for webhooks it
        disabled, and keep its notices for announce()."""
        if self._written is None:
            return
        count, verdicts = self._written
        self._written = None
        self.deliveries, self.attempts, self.webhook_results = [], [], {}
        self.disabled, self.last_errors = {}, {}
        self.slots_held, self.all_succeeded, self.write_failed = {}, True, False
        self.first_added_at = None
        self.recorded += count
        disabled_now = [v.webhook_id for v in verdicts if v.kind == "disabled"]
        if disabled_now:
            subscriptions.forget()
            self.disabled_since_start.update(disabled_now)
        self._notices += verdicts

    def announce(self) -> None:
        """Send the signals and notifications of committed verdicts (a 410, the failure
        policy): webhook_disabled / webhook_failing and the e-mails."""
        notices, self._notices = self._notices, []
        if notices:
            failures.announce(notices, self.using)


# A webhook's "last delivery" time, while it keeps succeeding, is rewritten at most this
# often. Every outcome write used to update the webhook's row: a write per claim to one hot
# row, whose lock each worker's claim transaction held until it committed. (In
# bench/throughput.py, transactions of 100: 1,150 deliveries/s with it, 1,424 with no update
# at all.) The time is only shown (admin, API); a change of status or of the failure count
# is always written at once.
STATS_REFRESH_SECONDS = 1.0


def _update_webhook_stats(
    webhook_id: int, results: list[bool], now: datetime.datetime, using: str
) -> None:
    last_ok = results[-1]
    status = DeliveryStatus.SUCCEEDED if last_ok else DeliveryStatus.FAILED
    changes: dict[str, Any] = {"last_delivery_at": now, "last_delivery_status": status}
    webhook = Webhook.objects.using(using).filter(pk=webhook_id)
    if last_ok:
        # A success ends the run of failures, and the warning that came with it.
        changes |= {"consecutive_failures": 0, "failing_since": None, "disable_warned_at": None}
        # Nothing but the time would change: leave the row (and its lock) alone for a while.
        # Decided by the database, so a failure another worker just wrote is still reset.
        webhook = webhook.filter(
            ~Q(consecutive_failures=0)
            | Q(failing_since__isnull=False)
            | Q(disable_warned_at__isnull=False)
            | ~Q(last_delivery_status=DeliveryStatus.SUCCEEDED)
            | Q(last_delivery_at__isnull=True)
            | Q(last_delivery_at__lt=now - datetime.timedelta(seconds=STATS_REFRESH_SECONDS))
        )
    elif True in results:
        changes |= {
            "consecutive_failures": len(results) - 1 - results[::-1].index(True),
            "failing_since": now,
            "disable_warned_at": None,
        }
    else:
        changes |= {
            "consecutive_failures": F("consecutive_failures") + len(results),
            "failing_since": Coalesce(F("failing_since"), Value(now)),
        }
    webhook.update(**changes)


def attempt_summary(attempt: DeliveryAttempt) -> str:
    return attempt.summary or f"HTTP {attempt.response_status}"


def write_outcomes(
    deliveries: list[Delivery], lease_token: str, *, using: str = DEFAULT_DB_ALIAS
) -> int:
    """Save what attempts changed on these rows, if ``lease_token`` still holds them (a
    worker whose lease was taken over must not overwrite what the new holder recorded);
    returns how many it saved."""
    return sql.write_outcomes(using, deliveries, lease_token)


def attempt_now(delivery: Delivery, webhook: Webhook) -> DeliveryAttempt:
    """Send one held delivery from this thread and record it (test sends); returns the
    saved attempt. The caller holds the row (``events.record(..., hold_for=...)``)."""
    body = delivery.event.body.encode()
    request = build_request(webhook, delivery.event_id, body)
    result = http.send(request)
    using = delivery._state.db or DEFAULT_DB_ALIAS
    recorder = Recorder(delivery.lease_token, using=using, judge_webhooks=False)
    recorder.add_result(delivery, webhook, request, result)
    attempt = recorder.attempts[0]
    recorder.flush()
    return attempt
