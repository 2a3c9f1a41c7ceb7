from django.contrib import admin

from .models import ReceivedWebhook


# The stubs make ModelAdmin generic; Django's runtime class cannot be subscripted.
@admin.register(ReceivedWebhook)
class ReceivedWebhookAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["received_at", "slot", "event", "model", "verified", "status_code"]
    list_filter = ["slot", "verified", "event", "model"]
    search_fields = ["event_id", "body"]
    readonly_fields = [field.name for field in ReceivedWebhook._meta.fields]
