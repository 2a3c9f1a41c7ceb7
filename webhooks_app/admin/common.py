"""Pieces the webhook, delivery and event admins share."""

from __future__ import annotations

import datetime
import json
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString

from webhooks_app import stats
from webhooks_app.models import Delivery, DeliveryStatus, is_retrying

# Past this many rows the list says "10,000+" instead of counting the rest.
COUNT_CAP = 10_000

# The badges' colours are in static/webhooks_app/admin.css (.webhooks-status-<status>).
STATUS_SYMBOLS: dict[str, str] = {
    DeliveryStatus.SUCCEEDED: "✔",
    DeliveryStatus.FAILED: "✖",
    DeliveryStatus.PENDING: "…",
    DeliveryStatus.SKIPPED: "-",
}


class CappedCountPaginator(Paginator):
    """Counts at most ``COUNT_CAP + 1`` rows: ``COUNT(*)`` over a LIMIT subquery reads that
    many index entries instead of the whole table. Pages past the cap are not offered;
    narrowing the filters is the way there."""

    cap = COUNT_CAP

    @cached_property
    def capped(self) -> bool:
        return self.count > COUNT_CAP

    @cached_property
    def count(self) -> int:
        object_list: Any = self.object_list
        if isinstance(object_list, QuerySet):
            return int(object_list.order_by().values("pk")[: COUNT_CAP + 1].count())
        return len(object_list)


class WebhooksModelAdmin(admin.ModelAdmin):
    """What our admins share: the one stylesheet (static/webhooks_app/admin.css)."""

    class Media:
        css = {"all": ["webhooks_app/admin.css"]}

    # The buttons on a change page (Send test event, Retry now, Redeliver, ...) all start and
    # end the same way: one object, one permission, back to its page.
    def object_for(self, request: HttpRequest, pk: Any, allowed: bool) -> Any:
        if not allowed:
            raise PermissionDenied
        return get_object_or_404(self.model, pk=pk)

    def back_to(self, obj: Any) -> HttpResponseRedirect:
        opts = self.model._meta
        return HttpResponseRedirect(
            reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
        )


def status_badge(status: str, label: str | None = None) -> SafeString:
    symbol = STATUS_SYMBOLS.get(status, "?")
    return format_html(
        '<span class="webhooks-status webhooks-status-{}">{} {}</span>',
        status,
        symbol,
        label or status,
    )


RETRYING_SYMBOL = "↻"


def moment(when: datetime.datetime | None, now: datetime.datetime | None = None) -> SafeString:
    """``4 s ago`` / ``in 2 min``, with the exact time (seconds, UTC) on hover: one format for
    every time an operator reads in these pages."""
    if when is None:
        return format_html("{}", "-")
    now = now or timezone.now()
    seconds = (when - now).total_seconds()
    age = stats.describe_age(abs(seconds))
    text = f"in {age}" if seconds > 0.5 else ("now" if seconds > -0.5 else f"{age} ago")
    exact = when.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return format_html('<time datetime="{}" title="{}">{}</time>', when.isoformat(), exact, text)


def moment_display(field: str, description: str) -> Any:
    """A read-only admin field showing ``field`` as a :func:`moment` (relative, exact on
    hover, seconds): ``created = moment_display("created_at", "created")`` in a ModelAdmin."""

    def show(model_admin: Any, obj: Any) -> SafeString:
        return moment(getattr(obj, field))

    show.short_description = description  # type: ignore[attr-defined]
    show.admin_order_field = field  # type: ignore[attr-defined]
    return show


def delivery_state(delivery: Delivery, now: datetime.datetime | None = None) -> SafeString:
    """The delivery's state as it is happening: *Retrying* (with when the next attempt is)
    for a pending delivery that has failed before, *Sending* while a worker holds it."""
    now = now or timezone.now()
    if delivery.status != DeliveryStatus.PENDING:
        return status_badge(delivery.status, delivery.get_status_display())
    if delivery.lease_token and delivery.next_attempt_at and delivery.next_attempt_at > now:
        return status_badge(delivery.status, "Sending")
    if is_retrying(delivery.status, delivery.attempts):
        return format_html(
            '<span class="webhooks-status webhooks-status-retrying">{} Retrying</span> '
            "<small>{} {}</small>",
            RETRYING_SYMBOL,
            "next attempt" if (delivery.next_attempt_at or now) > now else "due since",
            moment(delivery.next_attempt_at, now),
        )
    return status_badge(delivery.status, delivery.get_status_display())


def pretty_json(value: Any) -> SafeString:
    """A JSON value as an indented, escaped ``<pre>`` block."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
    return format_html('<pre class="webhooks-json">{}</pre>', text)


def pretty_body(body: str) -> SafeString:
    """A request or response body: indented when it is JSON, as sent otherwise."""
    try:
        return pretty_json(json.loads(body))
    except ValueError:
        return format_html('<pre class="webhooks-json">{}</pre>', body)


def has_perm(request: HttpRequest, codename: str) -> bool:
    return bool(request.user.has_perm(f"webhooks_app.{codename}"))
