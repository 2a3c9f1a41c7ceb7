"""The failure policy: a webhook that keeps failing is disabled, and its owner is told first.

Like Svix's: once every attempt to an endpoint has failed for ``DISABLE_AFTER_SECONDS``
(5 days) and at least ``DISABLE_AFTER_FAILURES`` attempts in a row (5), the webhook is
disabled, with the reason and the time on it; after ``DISABLE_WARNING_SHARE`` of that period
(half) its owner is warned once. A webhook's own ``disable_after_seconds`` and
``disable_after_failures`` replace the settings (0 seconds = never). A success ends the run
of failures, and with it the warning. Test sends do not count.

``Webhook.failing_since`` is kept by the recorder as it writes outcomes; ``judge()`` runs in
the same transaction, on the webhooks that just failed, so a decision is never made on
counters that did not commit. What it decided is announced after the commit (signals and
notifications.py), so a rolled-back write tells nobody anything.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from webhooks_app import notifications, signals
from webhooks_app.conf import app_settings
from webhooks_app.models import Webhook

logger = logging.getLogger("webhooks_app.failures")


@dataclass(frozen=True)
class Verdict:
    webhook_id: int
    kind: str  # "failing" (warned) or "disabled"


def warning_share() -> float | None:
    share = app_settings.DISABLE_WARNING_SHARE
    return float(share) if share else None


def describe_period(seconds: float) -> str:
    """``5 days``, ``36 hours``, ``90 minutes``: the largest unit that divides it evenly."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} seconds"


def disable_reason(webhook: Webhook, now: datetime.datetime, last_error: str) -> str:
    since = webhook.failing_since or now
    period = describe_period(webhook.effective_disable_after_seconds or 0)
    reason = (
        f"Disabled automatically on {now:%Y-%m-%d %H:%M:%S} UTC: every attempt failed for "
        f"{period} ({webhook.consecutive_failures} in a row since {since:%Y-%m-%d %H:%M:%S} "
        "UTC)"
    )
    return (f"{reason}; the last: {last_error}." if last_error else f"{reason}.")[:500]


def judge(
    webhook_ids: Iterable[int],
    now: datetime.datetime,
    using: str,
    last_errors: Mapping[int, str],
) -> list[Verdict]:
    """Warn or disable the webhooks among ``webhook_ids`` (ones that just failed) whose run
    of failures has lasted long enough; call in the transaction that wrote their counters."""
    ids = list(webhook_ids)
    if not ids:
        return []
    verdicts: list[Verdict] = []
    share = warning_share()
    # Only the counters and the policy: the secret is not decrypted for this.
    candidates = (
        Webhook.objects.using(using)
        .filter(pk__in=ids, is_active=True, failing_since__isnull=False)
        .only(
            "pk",
            "failing_since",
            "consecutive_failures",
            "disable_after_seconds",
            "disable_after_failures",
        )
    )
    for webhook in candidates:
        period = webhook.effective_disable_after_seconds
        if period is None or webhook.failing_since is None:
            continue
        failing_for = (now - webhook.failing_since).total_seconds()
        enough = webhook.consecutive_failures >= webhook.effective_disable_after_failures
        if failing_for >= period and enough:
            reason = disable_reason(webhook, now, last_errors.get(webhook.pk, ""))
            if disable(webhook.pk, reason, now, using):
                verdicts.append(Verdict(webhook.pk, "disabled"))
        elif (
            share is not None
            and failing_for >= share * period
            and Webhook.objects.using(using)
            .filter(disable_warned_at__isnull=True, pk=webhook.pk, is_active=True)
            .update(disable_warned_at=now)
        ):
            verdicts.append(Verdict(webhook.pk, "failing"))
    return verdicts


def disable(webhook_id: int, reason: str, now: datetime.datetime, using: str) -> bool:
    """Disable an active webhook automatically (a 410, this policy), with the reason and the
    time on it; False if it was not active. Call in the transaction that decided it."""
    return bool(
        Webhook.objects.using(using)
        .filter(pk=webhook_id, is_active=True)
        .update(is_active=False, disabled_reason=reason[:500], disabled_at=now)
    )


def announce(verdicts: Iterable[Verdict], using: str) -> None:
    """After the commit: signals and notifications for what ``judge()`` (or a 410) decided.
    A receiver or a mail server that fails is logged; the worker carries on."""
    for verdict in verdicts:
        webhook = Webhook.objects.using(using).filter(pk=verdict.webhook_id).first()
        if webhook is None:
            continue
        try:
            if verdict.kind == "disabled":
                signals.webhook_disabled.send(
                    sender=Webhook, webhook=webhook, reason=webhook.disabled_reason
                )
            else:
                signals.webhook_failing.send(
                    sender=Webhook,
                    webhook=webhook,
                    failing_since=webhook.failing_since,
                    disable_at=disable_at(webhook),
                )
        except Exception:
            logger.exception(
                "a receiver of the %s signal of webhook %s failed", verdict.kind, webhook.pk
            )
        notifications.send(notifications.notice_for(verdict.kind, webhook))


def disable_at(webhook: Webhook) -> datetime.datetime | None:
    """When the failing webhook will be disabled if nothing succeeds before (at the
    earliest: it also needs the failures in a row)."""
    period = webhook.effective_disable_after_seconds
    if period is None or webhook.failing_since is None:
        return None
    return webhook.failing_since + datetime.timedelta(seconds=period)
