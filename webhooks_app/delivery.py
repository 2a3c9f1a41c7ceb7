"""Delivery: the one function that does HTTP (``send``), and recording what it got (``deliver``).

Nothing here imports the queue: a worker task, a management command or a test calls
``deliver(ids, lease_token)`` the same way.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from requests.adapters import HTTPAdapter

from webhooks_app import __version__, retry, signals, signing
from webhooks_app.conf import app_settings
from webhooks_app.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Trigger,
    Webhook,
)

logger = logging.getLogger("webhooks_app.delivery")

USER_AGENT = f"django-webhooks/{__version__}"
# Headers a webhook's own headers may not replace: what receivers verify and route on.
PROTECTED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "host",
        "user-agent",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "transfer-encoding",
    }
)
REDACTED = "[redacted]"
_SENSITIVE_HEADER_MARKERS = ("auth", "cookie", "token", "secret", "key", "password")
# Records are written in bulk at most this often, so a killed worker repeats little work.
FLUSH_EVERY_RECORDS = 20
FLUSH_EVERY_SECONDS = 2.0
ERROR_MESSAGE_LIMIT = 2000


@dataclass(frozen=True)
class OutgoingRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    timeout: float


@dataclass
class AttemptResult:
    started_at: datetime.datetime
    duration_ms: int
    status_code: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: str = ""
    error_class: str = ""
    error_message: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def summary(self) -> str:
        if self.error_class:
            return f"{self.error_class}: {self.error_message}"[:500]
        return f"HTTP {self.status_code}"


# --- HTTP ----------------------------------------------------------------------------------

_local = threading.local()


def _session() -> requests.Session:
    """A pooled session per thread and process: connections are kept alive across a batch,
    and a forked worker never shares its parent's sockets."""
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None or getattr(_local, "pid", None) != os.getpid():
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=16, pool_maxsize=16, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _local.session, _local.pid = session, os.getpid()
    return session


def _error_class(exc: BaseException) -> str:
    """The most telling class name in the chain: a DNS failure hides inside ConnectionError."""
    seen: BaseException | None = exc
    while seen is not None:
        name = type(seen).__name__
        if name in {"NameResolutionError", "gaierror"}:
            return "NameResolutionError"
        nested = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        seen = getattr(seen, "reason", None) or nested or seen.__cause__
    return type(exc).__name__


def send(request: OutgoingRequest) -> AttemptResult:
    """Make one request; never raises. No redirects, a timeout, and a capped response body."""
    started_at = timezone.now()
    start = time.monotonic()
    limit = int(app_settings.RESPONSE_BODY_LIMIT)
    # requests' timeout bounds each socket wait; the deadline bounds a body that trickles.
    deadline = start + 2 * request.timeout
    try:
        with _session().request(
            request.method,
            request.url,
            data=request.body,
            headers=request.headers,
            timeout=request.timeout,
            allow_redirects=False,
            stream=True,
        ) as response:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_content(chunk_size=8192):
                chunks.append(chunk)
                size += len(chunk)
                if size >= limit or time.monotonic() > deadline:
                    break
            body = b"".join(chunks)[:limit]
            return AttemptResult(
                started_at=started_at,
                duration_ms=int((time.monotonic() - start) * 1000),
                status_code=response.status_code,
                response_headers=dict(response.headers),
                response_body=body.decode(response.encoding or "utf-8", errors="replace"),
            )
    except Exception as exc:  # every failure is recorded, none escapes (house rule 6)
        return AttemptResult(
            started_at=started_at,
            duration_ms=int((time.monotonic() - start) * 1000),
            error_class=_error_class(exc),
            error_message=str(exc)[:ERROR_MESSAGE_LIMIT],
        )


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


# --- recording -----------------------------------------------------------------------------


@dataclass
class _Decision:
    outcome: str
    status: str
    next_attempt_at: datetime.datetime | None
    disable_reason: str = ""


def decide(delivery: Delivery, result: AttemptResult, now: datetime.datetime) -> _Decision:
    """What an attempt's result means for its delivery (``delivery.attempts`` already counts
    this attempt)."""
    if result.succeeded:
        return _Decision(DeliveryAttempt.Outcome.SUCCEEDED, DeliveryStatus.SUCCEEDED, None)
    if result.status_code == 410:
        reason = f"The endpoint answered 410 Gone on {now:%Y-%m-%d %H:%M:%S} UTC."
        return _Decision(DeliveryAttempt.Outcome.DISABLED, DeliveryStatus.FAILED, None, reason)
    if delivery.attempts >= delivery.max_attempts:
        return _Decision(DeliveryAttempt.Outcome.FAILED, DeliveryStatus.FAILED, None)
    delay: float | None = None
    if result.status_code in (429, 503):
        retry_after = retry.parse_retry_after(_header(result.response_headers, "Retry-After"), now)
        if retry_after is not None:
            delay = retry.bounded_retry_after(retry_after)
    if delay is None:
        delay = retry.retry_delay(delivery.attempts)
    return _Decision(
        DeliveryAttempt.Outcome.RETRYING,
        DeliveryStatus.PENDING,
        now + datetime.timedelta(seconds=delay),
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    return next((value for key, value in headers.items() if key.lower() == lowered), None)


class _Recorder:
    """Collects outcomes and writes them in bulk, renewing the lease on rows still to do."""

    def __init__(self, lease_token: str, pending_ids: list[int]) -> None:
        self.lease_token = lease_token
        self.pending_ids = pending_ids
        self.lease_until = timezone.now()
        self.deliveries: list[Delivery] = []
        self.attempts: list[DeliveryAttempt] = []
        self.webhook_results: dict[int, list[bool]] = {}
        self.disabled: dict[int, str] = {}
        self.last_flush = time.monotonic()

    def hold(self, needed_seconds: float) -> set[int]:
        """Make sure the lease on the rows still to do lasts ``needed_seconds`` more; returns
        the rows we still hold."""
        now = timezone.now()
        if (self.lease_until - now).total_seconds() >= needed_seconds:
            return set(self.pending_ids)
        # Rows sent but not yet written are no longer renewed below: write them first, or
        # their lease could run out and the dispatcher would send them again.
        self.flush()
        seconds = max(float(app_settings.LEASE_SECONDS), needed_seconds)
        self.lease_until = now + datetime.timedelta(seconds=seconds)
        Delivery.objects.filter(id__in=self.pending_ids, lease_token=self.lease_token).update(
            next_attempt_at=self.lease_until
        )
        held = set(
            Delivery.objects.filter(
                id__in=self.pending_ids, lease_token=self.lease_token
            ).values_list("id", flat=True)
        )
        self.pending_ids = [pk for pk in self.pending_ids if pk in held]
        return held

    def add(self, delivery: Delivery, attempt: DeliveryAttempt | None, ok: bool | None) -> None:
        self.pending_ids.remove(delivery.pk)
        self.deliveries.append(delivery)
        if attempt is not None:
            self.attempts.append(attempt)
        if ok is not None:
            self.webhook_results.setdefault(delivery.webhook_id, []).append(ok)
        if (
            len(self.deliveries) >= FLUSH_EVERY_RECORDS
            or time.monotonic() - self.last_flush >= FLUSH_EVERY_SECONDS
        ):
            self.flush()

    def flush(self) -> None:
        if not self.deliveries:
            return
        now = timezone.now()
        disabled_now: list[int] = []
        with transaction.atomic():
            DeliveryAttempt.objects.bulk_create(self.attempts)
            _write_outcomes(self.deliveries, self.lease_token)
            for webhook_id, results in self.webhook_results.items():
                self._update_webhook_stats(webhook_id, results, now)
            for webhook_id, reason in self.disabled.items():
                if Webhook.objects.filter(pk=webhook_id, is_active=True).update(
                    is_active=False, disabled_reason=reason, disabled_at=now
                ):
                    disabled_now.append(webhook_id)
        for webhook_id in disabled_now:
            webhook = Webhook.objects.get(pk=webhook_id)
            signals.webhook_disabled.send(
                sender=Webhook, webhook=webhook, reason=webhook.disabled_reason
            )
        self.deliveries, self.attempts, self.webhook_results = [], [], {}
        self.last_flush = time.monotonic()

    @staticmethod
    def _update_webhook_stats(webhook_id: int, results: list[bool], now: datetime.datetime) -> None:
        last_ok = results[-1]
        status = DeliveryStatus.SUCCEEDED if last_ok else DeliveryStatus.FAILED
        if True in results:
            failures_since = len(results) - 1 - results[::-1].index(True)
            failures: Any = failures_since
        else:
            failures = F("consecutive_failures") + len(results)
        Webhook.objects.filter(pk=webhook_id).update(
            consecutive_failures=failures, last_delivery_at=now, last_delivery_status=status
        )


# Written per group of rows with equal values; the per-row timestamps go separately.
_OUTCOME_FIELDS = (
    "status",
    "attempts",
    "next_attempt_at",
    "next_trigger",
    "lease_token",
    "last_status_code",
    "last_error",
)


def _write_outcomes(deliveries: list[Delivery], lease_token: str) -> None:
    """Save what ``deliver`` changed on these rows, if ``lease_token`` still holds them.

    Nearly every row of a batch ends alike (succeeded, lease cleared, no error), so one
    ``UPDATE ... WHERE id IN (...)`` per distinct outcome replaces ``bulk_update``'s
    per-row, per-field ``CASE`` expressions, which cost half a worker's time
    (bench/worker_path.py). The token condition keeps a worker whose lease was taken over
    from overwriting what the new holder recorded.
    """
    held = Delivery.objects.filter(lease_token=lease_token)
    # Timestamps first: the grouped updates below clear the token they are matched on.
    held.bulk_update(deliveries, ["last_attempt_at", "completed_at"])
    groups: dict[tuple[Any, ...], list[int]] = {}
    for row in deliveries:
        key = tuple(getattr(row, name) for name in _OUTCOME_FIELDS)
        groups.setdefault(key, []).append(row.pk)
    for values, pks in groups.items():
        held.filter(pk__in=pks).update(**dict(zip(_OUTCOME_FIELDS, values, strict=True)))


def deliver(ids: list[int], lease_token: str) -> int:
    """Attempt the given deliveries that ``lease_token`` still holds; returns how many were
    attempted or settled. Rows whose lease someone else took are left alone."""
    now = timezone.now()
    own_token = uuid.uuid4().hex
    lease_until = now + datetime.timedelta(seconds=float(app_settings.LEASE_SECONDS))
    taken = Delivery.objects.filter(
        id__in=ids, lease_token=lease_token, status=DeliveryStatus.PENDING
    ).update(lease_token=own_token, next_attempt_at=lease_until)
    if not taken:
        return 0
    deliveries = list(
        Delivery.objects.filter(id__in=ids, lease_token=own_token)
        .select_related("webhook", "event")
        .order_by("webhook_id", "id")
    )
    recorder = _Recorder(own_token, [delivery.pk for delivery in deliveries])
    recorder.lease_until = lease_until
    for delivery in deliveries:
        webhook = delivery.webhook
        if delivery.pk not in recorder.hold(3 * webhook.effective_timeout + 5):
            continue
        reason = recorder.disabled.get(webhook.pk) or (
            "" if webhook.is_active else webhook.disabled_reason or "The webhook is disabled."
        )
        if reason:
            _settle(delivery, DeliveryStatus.SKIPPED, f"Skipped: {reason}"[:500])
            recorder.add(delivery, None, None)
            continue
        try:
            attempt = attempt_delivery(delivery, webhook)
        except Exception as exc:
            # A row that cannot even be attempted (a malformed webhook, a broken setting)
            # must still reach an outcome, or it would come back and fail for ever.
            logger.exception("could not attempt delivery %s", delivery.pk)
            attempt = _unattemptable(delivery, webhook, exc)
        if attempt.outcome == DeliveryAttempt.Outcome.DISABLED:
            recorder.disabled[webhook.pk] = delivery.last_error
        recorder.add(delivery, attempt, attempt.outcome == DeliveryAttempt.Outcome.SUCCEEDED)
    recorder.flush()
    return len(deliveries)


def attempt_delivery(delivery: Delivery, webhook: Webhook) -> DeliveryAttempt:
    """Send one delivery now and update it in memory; returns the unsaved attempt record."""
    body = delivery.event.body.encode()
    request = build_request(webhook, delivery.event_id, body)
    result = send(request)
    now = timezone.now()
    trigger = delivery.next_trigger
    delivery.attempts += 1
    decision = decide(delivery, result, now)
    delivery.last_attempt_at = result.started_at
    delivery.last_status_code = result.status_code
    delivery.last_error = decision.disable_reason or ("" if result.succeeded else result.summary)
    _settle(delivery, decision.status, delivery.last_error, decision.next_attempt_at)
    _log(webhook, delivery, result, decision)
    return DeliveryAttempt(
        delivery=delivery,
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
    )


def _unattemptable(delivery: Delivery, webhook: Webhook, exc: Exception) -> DeliveryAttempt:
    """A failed, recorded outcome for a delivery whose request could not be built or judged;
    it stays visible and can be retried once the cause is fixed."""
    now = timezone.now()
    trigger = delivery.next_trigger
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.last_status_code = None
    message = f"Could not send: {type(exc).__name__}: {exc}"[:500]
    _settle(delivery, DeliveryStatus.FAILED, message)
    return DeliveryAttempt(
        delivery=delivery,
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
    )


def _settle(
    delivery: Delivery,
    status: str,
    last_error: str,
    next_attempt_at: datetime.datetime | None = None,
) -> None:
    delivery.status = status
    delivery.last_error = last_error
    delivery.lease_token = ""
    delivery.next_attempt_at = next_attempt_at
    delivery.next_trigger = Trigger.AUTOMATIC
    if status != DeliveryStatus.PENDING:
        delivery.completed_at = timezone.now()


def _log(webhook: Webhook, delivery: Delivery, result: AttemptResult, decision: _Decision) -> None:
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
