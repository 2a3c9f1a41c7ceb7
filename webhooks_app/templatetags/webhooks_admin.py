"""Template tags of the admin pages (``{% load webhooks_admin %}``)."""

from __future__ import annotations

import datetime

from django import template
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from webhooks_app import stats

register = template.Library()
SHOWN = "webhooks_worker_banner_shown"


@register.simple_tag(takes_context=True)
def webhooks_worker_banner(context: template.Context) -> str:
    """A warning across the admin index and the webhooks pages when deliveries are due and no
    worker is alive: the first thing an operator should see when webhooks stopped going out.
    Once per page: the app index extends the index, and both carry the tag."""
    if context.render_context.get(SHOWN):
        return ""
    context.render_context[SHOWN] = True
    workers = stats.workers_down_with_work_due()
    if workers is None:
        return ""
    health = reverse("admin:webhooks_app_deliveryhealth_changelist")
    return format_html(
        '<ul class="messagelist"><li class="error" id="webhooks-workers-down">Webhook '
        "deliveries are due but {}: nothing is being sent. Start <code>manage.py "
        'qcluster</code>; see the <a href="{}">webhook health page</a>.</li></ul>',
        workers,
        health,
    )


@register.filter
def webhooks_moment(when: datetime.datetime | None) -> SafeString:
    """``{{ value|webhooks_moment }}``: relative, the exact UTC time with seconds on hover, as
    every time in the webhooks admin is shown (admin/common.py ``moment``)."""
    from webhooks_app.admin.common import moment

    return moment(when)
