"""Events: read-only, with the payload pretty-printed and a side-by-side diff of what changed."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
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
    pretty_json,
)
from webhooks_app.admin.filters import OwnModelFilter, OwnNameFilter
from webhooks_app.models import Delivery, Event


def changed_rows(payload: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """``(field, before, after, changed)`` for every field of ``data`` / ``previous``."""
    data, previous = payload.get("data"), payload.get("previous")
    if not isinstance(data, dict) or not isinstance(previous, dict):
        return []
    changed = set(payload.get("changed_fields") or [])
    rows = []
    for key in dict.fromkeys([*previous, *data]):
        before, after = previous.get(key), data.get(key)
        rows.append(
            (
                key,
                json.dumps(before, ensure_ascii=False),
                json.dumps(after, ensure_ascii=False),
                key in changed or before != after,
            )
        )
    return rows


INLINE_FIELDS = ("link", "webhook", "status_display", "attempts", "last_error", "created_shown")
DETAIL_FIELDS = (
    "id",
    "name",
    "model",
    "object_id",
    "created_shown",
    "user",
    "changes",
    "data",
    "previous",
)


class DeliveryInline(admin.TabularInline):
    model = Delivery
    fields = INLINE_FIELDS
    readonly_fields = INLINE_FIELDS
    extra = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        return super().get_queryset(request).select_related("webhook")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="delivery")
    def link(self, obj: Delivery) -> SafeString:
        url = reverse("admin:webhooks_app_delivery_change", args=[obj.pk])
        return format_html('<a href="{}">#{}</a>', url, obj.pk)

    @admin.display(description="status")
    def status_display(self, obj: Delivery) -> SafeString:
        return delivery_state(obj)

    created_shown = moment_display("created_at", "created")


@admin.register(Event)
class EventAdmin(WebhooksModelAdmin):
    list_display = ["id", "name", "model", "object_id", "created_shown"]
    list_filter = [OwnNameFilter, OwnModelFilter, "created_at"]
    search_fields = ["id"]  # shows the box; get_search_results does the work
    search_help_text = "An event id (evt_…) or an object id, exactly."
    show_full_result_count = False
    paginator = CappedCountPaginator
    list_per_page = 50
    actions = ["redeliver"]
    inlines = [DeliveryInline]
    change_form_template = "admin/webhooks_app/event/change_form.html"
    fields = DETAIL_FIELDS
    readonly_fields = DETAIL_FIELDS

    created_shown = moment_display("created_at", "created")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Event]:
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if match and (match.url_name or "").endswith("changelist"):
            return queryset.defer("body")
        return queryset

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Event], search_term: str
    ) -> tuple[QuerySet[Event], bool]:
        # Exact and case-sensitive, so both halves are index lookups; Django's "=field" is
        # iexact, a LIKE that SQLite answers by reading every event.
        term = search_term.strip()
        if term:
            queryset = queryset.filter(Q(pk=term) | Q(object_id=term))
        return queryset, False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return has_perm(request, "retry_delivery")

    @admin.display(description="user")
    def user(self, obj: Event) -> str:
        user = obj.payload.get("user")
        return json.dumps(user, ensure_ascii=False) if user else "—"

    @admin.display(description="data")
    def data(self, obj: Event) -> SafeString:
        return pretty_json(obj.payload.get("data"))

    @admin.display(description="previous")
    def previous(self, obj: Event) -> SafeString | str:
        previous = obj.payload.get("previous")
        return "—" if previous is None else pretty_json(previous)

    @admin.display(description="changes")
    def changes(self, obj: Event) -> SafeString | str:
        rows = changed_rows(obj.payload)
        if not rows:
            return "—"
        return render_to_string("admin/webhooks_app/event/changes.html", {"rows": rows})

    @admin.action(description="Redeliver to all subscribed webhooks", permissions=["retry"])
    def redeliver(self, request: HttpRequest, queryset: QuerySet[Event]) -> None:
        total = sum(operations.redeliver_event(event) for event in queryset)
        noun = "delivery" if total == 1 else "deliveries"
        messages.success(request, f"Queued {total} new {noun} of {len(queryset)} event(s).")

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(require_POST(self.redeliver_view))
        return [
            path("<str:pk>/redeliver/", view, name="webhooks_app_event_redeliver"),
            *super().get_urls(),
        ]

    def redeliver_view(self, request: HttpRequest, pk: str) -> HttpResponse:
        event = self.object_for(request, pk, self.has_retry_permission(request))
        self.redeliver(request, Event.objects.filter(pk=event.pk))
        return self.back_to(event)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = {**(extra_context or {}), "can_retry": self.has_retry_permission(request)}
        return super().change_view(request, object_id, form_url, context)
