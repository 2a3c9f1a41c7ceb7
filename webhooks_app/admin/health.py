"""The health page: counts by status, the queue's state and a success-rate chart.

It hangs off the ``DeliveryHealth`` proxy model only so that it is listed in the admin index
next to the other webhook pages; it has no rows of its own.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from webhooks_app import stats
from webhooks_app.admin.charts import success_chart
from webhooks_app.admin.common import WebhooksModelAdmin, has_perm, status_badge
from webhooks_app.models import DeliveryHealth, DeliveryStatus

# window -> (length, chart bucket)
WINDOWS = {
    "24h": (datetime.timedelta(hours=24), datetime.timedelta(hours=1)),
    "7d": (datetime.timedelta(days=7), datetime.timedelta(hours=6)),
}


@admin.register(DeliveryHealth)
class DeliveryHealthAdmin(WebhooksModelAdmin):
    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_perm(request, "view_delivery")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        window_key = request.GET.get("window", "24h")
        if window_key not in WINDOWS:
            window_key = "24h"
        window, bucket = WINDOWS[window_key]
        now = timezone.now()
        since = now - window
        counts = stats.status_counts(since)
        changelist = reverse("admin:webhooks_app_delivery_changelist")
        status_rows = [
            (
                status_badge(status, label),
                counts[status],
                f"{changelist}?status__exact={status}&created_at__gte={since:%Y-%m-%d %H:%M:%S}",
            )
            for status, label in DeliveryStatus.choices
        ]
        health = stats.queue_health(now)
        failures = [
            (health.webhook_names.get(pk, pk), n, pk)
            for pk, n in sorted(health.failures_last_hour.items(), key=lambda kv: -kv[1])
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "media": self.media,
            "title": "Webhook health",
            "window_key": window_key,
            "windows": list(WINDOWS),
            "status_rows": status_rows,
            "health": health,
            "failures": failures,
            "chart": success_chart(stats.success_over_time(since, now, bucket), since, now, bucket),
            "bucket_hours": int(bucket.total_seconds() // 3600),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/webhooks_app/deliveryhealth/health.html", context)
