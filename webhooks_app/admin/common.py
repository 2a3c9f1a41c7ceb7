"""Pieces the webhook, delivery and event admins share."""

from __future__ import annotations

import datetime
import json
from typing import Any

from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString

from webhooks_app import stats
from webhooks_app.models import Delivery, DeliveryStatus

# Past this many rows the list says "10,000+" instead of counting the rest.
COUNT_CAP = 10_000

STATUS_COLOURS: dict[str, tuple[str, str]] = {
    DeliveryStatus.SUCCEEDED: ("#1a7f37", "✔"),
    DeliveryStatus.FAILED: ("#cf222e", "✖"),
    DeliveryStatus.PENDING: ("#9a6700", "…"),
    DeliveryStatus.SKIPPED: ("#6e7781", "-"),
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


def status_badge(status: str, label: str | None = None) -> SafeString:
    colour, symbol = STATUS_COLOURS.get(status, ("#6e7781", "?"))
    return format_html(
        '<span class="webhooks-status webhooks-status-{}" style="color:#fff;background:{};'
        'border-radius:10px;padding:1px 8px;font-weight:600;white-space:nowrap">{} {}</span>',
        status,
        colour,
        symbol,
        label or status,
    )


RETRYING_COLOUR = ("#bc4c00", "↻")


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
    if delivery.attempts:
        colour, symbol = RETRYING_COLOUR
        return format_html(
            '<span class="webhooks-status webhooks-status-retrying" style="color:#fff;'
            "background:{};border-radius:10px;padding:1px 8px;font-weight:600;"
            'white-space:nowrap">{} Retrying</span> <small>{} {}</small>',
            colour,
            symbol,
            "next attempt" if (delivery.next_attempt_at or now) > now else "due since",
            moment(delivery.next_attempt_at, now),
        )
    return status_badge(delivery.status, delivery.get_status_display())


def pretty_json(value: Any) -> SafeString:
    """A JSON value as an indented, escaped ``<pre>`` block."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
    return format_html('<pre class="webhooks-json" style="{}">{}</pre>', PRE_STYLE, text)


def pretty_body(body: str) -> SafeString:
    """A request or response body: indented when it is JSON, as sent otherwise."""
    try:
        return pretty_json(json.loads(body))
    except ValueError:
        return format_html('<pre class="webhooks-json" style="{}">{}</pre>', PRE_STYLE, body)


PRE_STYLE = (
    "white-space:pre-wrap;word-break:break-all;max-height:400px;overflow:auto;"
    "background:var(--darkened-bg,#f8f8f8);padding:8px;margin:0"
)


def has_perm(request: HttpRequest, codename: str) -> bool:
    return bool(request.user.has_perm(f"webhooks_app.{codename}"))
