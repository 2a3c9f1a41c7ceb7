"""Template tags of the admin pages (``{% load webhooks_admin %}``)."""

from __future__ import annotations

from django import template
from django.urls import reverse
from django.utils.html import format_html

from webhooks_app import stats

register = template.Library()


@register.simple_tag
def webhooks_worker_banner() -> str:
    """A warning across the admin index when deliveries are due and no worker is alive: the
    first thing an operator should see when webhooks stopped going out."""
    if not stats.workers_down_with_work_due():
        return ""
    health = reverse("admin:webhooks_app_deliveryhealth_changelist")
    return format_html(
        '<ul class="messagelist"><li class="error" id="webhooks-workers-down">Webhook '
        "deliveries are due but {}: nothing is being sent. Start <code>manage.py "
        'qcluster</code>; see the <a href="{}">webhook health page</a>.</li></ul>',
        stats.queue_health().workers_text,
        health,
    )
