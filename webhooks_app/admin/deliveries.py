"""Deliveries: a list to find the failed ones fast, and a page like GitHub's "Recent
deliveries" showing every attempt, with "Retry now"."""

from __future__ import annotations

import re
from typing import Any

from django.contrib import admin, messages
from django.db.models import Prefetch, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from webhooks_app import operations
from webhooks_app.admin.common import (
    CappedCountPaginator,
    WebhooksModelAdmin,
    delivery_state,
    has_perm,
    moment_display,
    pretty_body,
)
from webhooks_app.admin.filters import EventModelFilter, EventNameFilter, StatusCodeClassFilter
from webhooks_app.models import Delivery, Event, Webhook

EVENT_ID = re.compile(r"^evt_[0-9a-zA-Z]+$")
# An object id shared by more events than this is not a useful search.
SEARCH_EVENTS_MAX = 1000


def search_deliveries(queryset: QuerySet[Delivery], term: str) -> QuerySet[Delivery]:
    """Event id, object id or URL, each answered from an index.

    Django's ``search_fields`` would OR three ``LIKE '%term%'`` across a JOIN, which scans
    every delivery. An event id is matched exactly; an object id through the events'
    ``object_id`` index; a URL fragment against the (small) webhook table first. Only the
    branches that matched anything reach the query, so a URL search is one index range.
    """
    term = term.strip()
    if not term:
        return queryset
    if EVENT_ID.match(term):
        return queryset.filter(event_id=term)
    event_ids = list(
        Event.objects.filter(object_id=term).values_list("pk", flat=True)[:SEARCH_EVENTS_MAX]
    )
    hook_ids = list(Webhook.objects.filter(url__icontains=term).values_list("pk", flat=True))
    condition = Q(pk__in=[])
    if event_ids:
        condition |= Q(event_id__in=event_ids)
    if hook_ids:
        condition |= Q(webhook_id__in=hook_ids)
    return queryset.filter(condition)


def queue_retry(request: HttpRequest, queryset: QuerySet[Delivery]) -> int:
    queued = operations.retry_deliveries(queryset)
    skipped = queryset.count() - queued
    text = f"Queued {queued} deliver{'y' if queued == 1 else 'ies'} for another attempt."
    if skipped > 0:
        text += f" {skipped} in flight right now {'was' if skipped == 1 else 'were'} left alone."
    if queued:
        messages.success(request, text)
    else:
        messages.warning(request, text)
    return queued


DETAIL_FIELDS = (
    "event_link",
    "webhook",
    "status_display",
    "attempts",
    "max_attempts",
    "next_attempt_shown",
    "last_attempt_shown",
    "last_status_code",
    "last_error",
    "completed_shown",
    "created_shown",
)


@admin.register(Delivery)
class DeliveryAdmin(WebhooksModelAdmin):
    list_display = [
        "id",
        "status_display",
        "event_name_display",
        "event_model_display",
        "object_id",
        "webhook",
        "attempts",
        "response_display",
        "created_display",
    ]
    list_display_links = ["id", "status_display"]
    list_filter = [
        "status",
        "webhook",
        EventNameFilter,
        EventModelFilter,
        StatusCodeClassFilter,
        "created_at",
    ]
    # No JOIN at all: with one, SQLite plans the page from the joined table and sorts a
    # million deliveries. An empty tuple (not False, which would make Django join every
    # foreign key shown) and get_queryset's prefetch: two small extra queries per page.
    list_select_related = ()
    list_per_page = 50
    # Only orders an index serves: sorting a million rows by attempts or webhook name is a
    # full sort on every page view.
    sortable_by = ["id", "created_at"]
    search_fields = ["event__id"]  # shows the box; search_deliveries does the work
    search_help_text = "An event id (evt_…), an object id, or part of the endpoint URL."
    show_full_result_count = False
    paginator = CappedCountPaginator
    actions = ["retry_selected"]
    change_form_template = "admin/webhooks_app/delivery/change_form.html"
    fields = DETAIL_FIELDS
    readonly_fields = DETAIL_FIELDS

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        # The event's body can be large; the list never shows it.
        events = Prefetch("event", queryset=Event.objects.defer("body"))
        return super().get_queryset(request).prefetch_related(events, "webhook")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Delivery], search_term: str
    ) -> tuple[QuerySet[Delivery], bool]:
        return search_deliveries(queryset, search_term), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return has_perm(request, "retry_delivery")

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: Delivery) -> SafeString:
        return delivery_state(obj)

    created_display = moment_display("created_at", "created")
    created_shown = moment_display("created_at", "created")
    next_attempt_shown = moment_display("next_attempt_at", "next attempt")
    last_attempt_shown = moment_display("last_attempt_at", "last attempt")
    completed_shown = moment_display("completed_at", "completed")

    @admin.display(description="event", ordering="event_name")
    def event_name_display(self, obj: Delivery) -> str:
        return obj.event_name or obj.event.name  # the copied column; older rows lack it

    @admin.display(description="model", ordering="event_model")
    def event_model_display(self, obj: Delivery) -> str:
        return obj.event_model or obj.event.model

    @admin.display(description="object id")
    def object_id(self, obj: Delivery) -> str:
        return obj.event.object_id

    @admin.display(description="response")
    def response_display(self, obj: Delivery) -> str:
        # last_error is the last failed attempt's summary in plain words ("HTTP 401 (Invalid
        # signature)", "Connection refused"): the cause, not only the code.
        if obj.last_error:
            return obj.last_error[:80]
        return f"HTTP {obj.last_status_code}" if obj.last_status_code else "—"

    @admin.display(description="event")
    def event_link(self, obj: Delivery) -> SafeString:
        url = reverse("admin:webhooks_app_event_change", args=[obj.event_id])
        return format_html('<a href="{}">{}</a>', url, obj.event)

    @admin.action(description="Retry selected deliveries now", permissions=["retry"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        queue_retry(request, queryset)

    def get_urls(self) -> list[URLPattern]:
        retry = self.admin_site.admin_view(require_POST(self.retry_view))
        return [
            path("<int:pk>/retry/", retry, name="webhooks_app_delivery_retry"),
            *super().get_urls(),
        ]

    def retry_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        delivery = self.object_for(request, pk, self.has_retry_permission(request))
        queue_retry(request, Delivery.objects.filter(pk=delivery.pk))
        return self.back_to(delivery)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = dict(extra_context or {})
        row = (
            Delivery.objects.select_related("event", "webhook").filter(pk=int(object_id)).first()
            if object_id.isdigit()
            else None
        )
        if row is not None:
            context["attempts"] = list(row.attempts_log.order_by("-number"))
            context["request_body"] = pretty_body(row.event.body)
            context["can_retry"] = self.has_retry_permission(request)
            context["retry_url"] = reverse("admin:webhooks_app_delivery_retry", args=[row.pk])
        return super().change_view(request, object_id, form_url, context)
