"""A read-mostly admin so operators can see what was sent; richer tools build on it."""

from __future__ import annotations

from django.contrib import admin

from webhooks_app.models import Delivery, DeliveryAttempt, Event, Webhook


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "url",
        "is_active",
        "managed_by_settings",
        "consecutive_failures",
        "last_delivery_at",
        "last_delivery_status",
    ]
    list_filter = ["is_active", "managed_by_settings"]
    search_fields = ["name", "url"]
    exclude = ["secret", "previous_secret"]
    readonly_fields = ["disabled_reason", "disabled_at", "settings_declaration", "created_at"]


class DeliveryAttemptInline(admin.StackedInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False

    def has_add_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "event",
        "webhook",
        "status",
        "attempts",
        "last_status_code",
        "created_at",
    ]
    list_filter = ["status", "created_at"]
    list_select_related = ["event", "webhook"]
    search_fields = ["event__id", "event__object_id", "webhook__url"]
    show_full_result_count = False
    inlines = [DeliveryAttemptInline]

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "model", "object_id", "created_at"]
    list_filter = ["name", "model"]
    search_fields = ["id", "object_id"]
    show_full_result_count = False

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False
