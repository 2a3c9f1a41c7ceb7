"""Telling people that a webhook is failing, or was disabled.

By e-mail through Django's mail (``send_mail``, so any ``EMAIL_BACKEND`` works) to the
webhook's owner and/or the site's ``ADMINS``, as ``WEBHOOKS["NOTIFY"]`` says
(``["owner", "admins"]`` by default). ``WEBHOOKS["NOTIFIER"]``, a dotted path to a callable
that takes a :class:`Notice`, replaces the e-mail: post to a chat, open a ticket.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.utils import timezone
from django.utils.module_loading import import_string

from webhooks_app.conf import app_settings
from webhooks_app.models import Webhook

logger = logging.getLogger("webhooks_app.notifications")


@dataclass(frozen=True)
class Notice:
    kind: str  # "failing" or "disabled"
    webhook: Webhook
    subject: str
    message: str
    # Whom NOTIFY names, as e-mail addresses (a NOTIFIER may ignore them).
    recipients: list[str]


def recipients(webhook: Webhook) -> list[str]:
    chosen = set(app_settings.NOTIFY or [])
    found: list[str] = []
    if "owner" in chosen and webhook.owner_id is not None:
        email = getattr(webhook.owner, "email", "") or ""
        if email:
            found.append(email)
    if "admins" in chosen:
        for entry in getattr(settings, "ADMINS", []) or []:
            # Django < 6 lists (name, address) pairs; Django 6 lists addresses.
            address = entry[1] if isinstance(entry, (list, tuple)) else entry
            if address and address not in found:
                found.append(str(address))
    return found


def ways_to_reenable(webhook: Webhook) -> str:
    """Every way to enable ``webhook`` again and resend what it skipped, as one phrase (the
    disable e-mail and a disabled webhook's successful test both say it)."""
    return (
        "the admin's 'Re-enable and resend skipped' action, the API's POST "
        f'.../webhooks/{webhook.pk}/enable/ with {{"resend_skipped": true}}, '
        f"or `manage.py webhooks_enable {webhook.pk} --resend-skipped`"
    )


def notice_for(kind: str, webhook: Webhook) -> Notice:
    from webhooks_app import failures

    name = str(webhook)
    if kind == "disabled":
        subject = f"Webhook disabled: {name}"
        message = (
            f"The webhook {name} ({webhook.url}, id {webhook.pk}) was disabled.\n\n"
            f"{webhook.disabled_reason}\n\n"
            "Events that arrive while it is disabled are kept as skipped deliveries. Once "
            "the endpoint works again, re-enable the webhook and resend what was skipped: "
            f"{ways_to_reenable(webhook)}."
        )
    else:
        since = webhook.failing_since or timezone.now()
        disable_at = failures.disable_at(webhook) or since
        subject = f"Webhook failing: {name}"
        message = (
            f"Every attempt to deliver to the webhook {name} ({webhook.url}, id "
            f"{webhook.pk}) has failed since {since:%Y-%m-%d %H:%M:%S} UTC "
            f"({webhook.consecutive_failures} in a row).\n\n"
            f"Unless an attempt succeeds, it will be disabled on "
            f"{disable_at:%Y-%m-%d %H:%M:%S} UTC or soon after.\n\n"
            "The admin's delivery list shows what the endpoint answered."
        )
    return Notice(
        kind=kind, webhook=webhook, subject=subject, message=message, recipients=recipients(webhook)
    )


def send(notice: Notice) -> None:
    """Deliver one notice; a failing mail server or notifier is logged, never raised."""
    try:
        notifier: Any = app_settings.NOTIFIER
        if notifier:
            import_string(notifier)(notice)
            return
        if not notice.recipients:
            logger.warning(
                "nobody to tell that webhook %s is %s (no owner e-mail, no ADMINS)",
                notice.webhook.pk,
                notice.kind,
            )
            return
        send_mail(
            notice.subject,
            notice.message,
            getattr(settings, "DEFAULT_FROM_EMAIL", None),
            notice.recipients,
        )
    except Exception:
        logger.exception(
            "could not send the %s notice of webhook %s", notice.kind, notice.webhook.pk
        )
