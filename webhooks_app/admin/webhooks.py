"""Webhooks: health at a glance in the list; test, enable, disable, rotate and recover."""

from __future__ import annotations

import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_POST

from webhooks_app import holds, operations, signing, stats
from webhooks_app.admin.charts import activity_chart
from webhooks_app.admin.common import (
    WebhooksModelAdmin,
    delivery_state,
    has_perm,
    moment,
    moment_display,
    pretty_json,
    status_badge,
)
from webhooks_app.admin.widgets import HeadersField, NameListField, event_choices, model_choices
from webhooks_app.delivery import redact_headers, restore_redacted
from webhooks_app.models import Delivery, Webhook

RECENT_DELIVERIES = 20
# A held webhook's owed events are counted up to this many on its page.
HELD_COUNTED = 10_000
GRACE_CHOICES = [
    ("0", "none: the old secret stops working now"),
    ("3600", "1 hour"),
    ("86400", "24 hours"),
    ("604800", "7 days"),
]


class RecoverForm(forms.Form):
    since = forms.DateTimeField(
        help_text="Re-send failed deliveries created at or after this time (server time zone).",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    until = forms.DateTimeField(
        required=False,
        help_text="Optional end of the window; empty means up to now.",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )


class RotateForm(forms.Form):
    grace = forms.ChoiceField(
        choices=GRACE_CHOICES,
        initial="86400",
        label="Old secret keeps signing for",
        help_text="Both secrets sign every request until then, so receivers can switch over.",
    )


def _shown(field: Any) -> Any:
    return "redacted_headers" if field == "headers" else field


# The webhook page's chart: window -> (length, bucket).
ACTIVITY_WINDOWS = {
    "24h": (datetime.timedelta(hours=24), datetime.timedelta(hours=1)),
    "7d": (datetime.timedelta(days=7), datetime.timedelta(hours=6)),
}


class WebhookForm(forms.ModelForm):
    """The same rules as settings and the API (the model's), so the admin cannot store a
    webhook the API would refuse."""

    class Meta:
        model = Webhook
        fields = [
            "name",
            "url",
            "is_active",
            "owner",
            "events",
            "models",
            "method",
            "headers",
            "timeout",
            "retries",
            "max_in_flight",
            "rate_limit",
            "signature_header",
            "signature_prefix",
            "disable_after_seconds",
            "disable_after_failures",
        ]

    # Every rule is the model's (Webhook.clean, which runs rules.py): the admin refuses what
    # the API and the settings checks refuse, with the same messages. These fields only
    # give the values their shape: choices and rows instead of raw JSON.
    events = NameListField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None chosen: every event. A wildcard such as user.* takes every event "
        "under that prefix, present and future.",
    )
    models = NameListField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None chosen: every model (and events without one, such as custom events).",
    )
    headers = HeadersField(required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        instance = self.instance
        # (A webhook declared in settings shows these read-only: no form fields then.)
        if "events" in self.fields:
            self.fields["events"].choices = event_choices(list(instance.events or []))  # type: ignore[attr-defined]
        if "models" in self.fields:
            self.fields["models"].choices = model_choices(list(instance.models or []))  # type: ignore[attr-defined]
        # Shown as the API shows them: a credential in a custom header stays hidden.
        self.initial["headers"] = redact_headers(instance.headers or {})

    def clean_headers(self) -> dict[str, str]:
        return restore_redacted(self.cleaned_data["headers"], self.instance.headers or {})


@admin.register(Webhook)
class WebhookAdmin(WebhooksModelAdmin):
    list_display = [
        "__str__",
        "url",
        "state",
        "success_rate",
        "consecutive_failures",
        "last_delivery",
    ]
    list_filter = ["is_active", "managed_by_settings", "last_delivery_status", "method"]
    search_fields = ["name", "url"]
    list_select_related = ["owner"]
    actions = [
        "send_test_event",
        "enable",
        "enable_and_resend",
        "disable",
        "rotate_secret",
        "recover_failed",
    ]
    change_form_template = "admin/webhooks_app/webhook/change_form.html"
    form = WebhookForm
    # A sites' users can be many: a lookup, not a <select> of every user on every page view.
    raw_id_fields = ["owner"]
    fieldsets = [
        (None, {"fields": ["name", "url", "is_active", "state", "owner"]}),
        ("Subscriptions", {"fields": ["events", "models"]}),
        (
            "Request",
            {
                "fields": [
                    "method",
                    "headers",
                    "timeout",
                    "retries",
                    "max_in_flight",
                    "rate_limit",
                    "signature_header",
                    "signature_prefix",
                    "masked_secret",
                ]
            },
        ),
        (
            "Health",
            {
                "fields": [
                    "disable_after_seconds",
                    "disable_after_failures",
                    "held_back",
                    "consecutive_failures",
                    "failing_since_shown",
                    "disable_warned_at_shown",
                    "last_delivery_at_shown",
                    "last_delivery_status",
                    "created_at_shown",
                    "updated_at_shown",
                ]
            },
        ),
        ("Declared in settings", {"fields": ["declaration"], "classes": ["collapse"]}),
        ("Recent deliveries", {"fields": ["recent_deliveries"]}),
    ]
    computed = [
        "state",
        "redacted_headers",
        "masked_secret",
        "declaration",
        "recent_deliveries",
        "held_back",
        "consecutive_failures",
        "failing_since_shown",
        "disable_warned_at_shown",
        "last_delivery_at_shown",
        "last_delivery_status",
        "created_at_shown",
        "updated_at_shown",
    ]

    failing_since_shown = moment_display("failing_since", "failing since")
    disable_warned_at_shown = moment_display("disable_warned_at", "owner warned")
    last_delivery_at_shown = moment_display("last_delivery_at", "last delivery")
    created_at_shown = moment_display("created_at", "created")
    updated_at_shown = moment_display("updated_at", "updated")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Webhook]:
        since = timezone.now() - datetime.timedelta(hours=24)
        return stats.with_success_rate(super().get_queryset(request), since)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is not None and obj.managed_by_settings:
            # settings.WEBHOOKS["ENDPOINTS"] is the source of truth; sync would undo edits.
            fields = [str(f) for _, options in self.fieldsets for f in options["fields"]]
            return [*fields, "redacted_headers"]
        return list(self.computed)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return [(None, {"fields": ["name", "url", "events", "models", "method", "headers"]})]
        fieldsets = self.fieldsets
        if obj.managed_by_settings or not self.has_change_permission(request, obj):
            # Whoever cannot edit the headers sees them with credentials redacted.
            fieldsets = [
                (name, {**options, "fields": [_shown(f) for f in options["fields"]]})
                for name, options in fieldsets
            ]
        if not obj.managed_by_settings:
            return [fs for fs in fieldsets if fs[0] != "Declared in settings"]
        return fieldsets

    @admin.display(description="headers")
    def redacted_headers(self, obj: Webhook) -> SafeString:
        return pretty_json(redact_headers({str(k): str(v) for k, v in (obj.headers or {}).items()}))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.managed_by_settings:
            return False
        return super().has_delete_permission(request, obj)

    def has_test_permission(self, request: HttpRequest) -> bool:
        return has_perm(request, "test_webhook")

    def has_recover_permission(self, request: HttpRequest) -> bool:
        return has_perm(request, "recover_webhook")

    def has_rotate_permission(self, request: HttpRequest) -> bool:
        return has_perm(request, "rotate_webhook_secret")

    # --- columns ---------------------------------------------------------------------------

    @admin.display(description="state", ordering="is_active")
    def state(self, obj: Webhook) -> SafeString:
        if obj.is_active:
            return mark_safe('<span class="webhooks-state-active">active</span>')
        return format_html(
            '<span class="webhooks-state-disabled">disabled</span> <small>{}</small>',
            obj.disabled_reason,
        )

    @admin.display(description="success 24 h")
    def success_rate(self, obj: Webhook) -> str:
        settled = getattr(obj, "settled_24h", 0)
        rate = stats.success_rate(getattr(obj, "succeeded_24h", 0), settled)
        return "—" if rate is None else f"{rate:.0%} of {settled}"

    @admin.display(description="last delivery", ordering="last_delivery_at")
    def last_delivery(self, obj: Webhook) -> SafeString | str:
        if obj.last_delivery_at is None:
            return "—"
        return format_html(
            "{} {}",
            status_badge(obj.last_delivery_status),
            moment(obj.last_delivery_at),
        )

    @admin.display(description="held back")
    def held_back(self, obj: Webhook) -> str:
        held = holds.shown(obj.pk, using=obj._state.db or "default", most=HELD_COUNTED)
        if held is None:
            return "—"
        hold, count = held
        counted = f"{count:,}+" if count >= HELD_COUNTED else f"{count:,}"
        since = hold.held_at.astimezone(datetime.UTC)
        return (
            f"Its queue has been deep since {since:%Y-%m-%d %H:%M:%S} UTC: {counted} events "
            "fanned out since then wait as events, and become its deliveries, oldest "
            "first, as it catches up."
        )

    @admin.display(description="secret")
    def masked_secret(self, obj: Webhook) -> str:
        text = signing.mask_secret(obj.secret)
        if obj.previous_secret and obj.previous_secret_expires_at:
            until = obj.previous_secret_expires_at.astimezone(datetime.UTC)
            text += f" (the previous secret signs until {until:%Y-%m-%d %H:%M:%S} UTC)"
        return text

    @admin.display(description="declaration")
    def declaration(self, obj: Webhook) -> SafeString:
        declared = dict(obj.settings_declaration or {})
        if "secret" in declared:
            declared["secret"] = signing.mask_secret(str(declared["secret"]))
        if isinstance(declared.get("headers"), dict):
            declared["headers"] = redact_headers(
                {str(k): str(v) for k, v in declared["headers"].items()}
            )
        return pretty_json(declared)

    @admin.display(description="latest")
    def recent_deliveries(self, obj: Webhook) -> SafeString:
        rows = (
            Delivery.objects.filter(webhook=obj)
            .select_related("event")
            .defer("event__body")
            .order_by("-created_at", "-id")[:RECENT_DELIVERIES]
        )
        shown = [
            {
                "pk": row.pk,
                "url": reverse("admin:webhooks_app_delivery_change", args=[row.pk]),
                "state": delivery_state(row),
                "event": row.event_name or row.event.name,
                "what": row.last_error[:120] or row.last_status_code or "—",
                "created": moment(row.created_at),
            }
            for row in rows
        ]
        all_url = f"{reverse('admin:webhooks_app_delivery_changelist')}?webhook__id__exact={obj.pk}"
        return render_to_string(
            "admin/webhooks_app/webhook/recent_deliveries.html",
            {"rows": shown, "all_url": all_url},
        )

    # --- actions ---------------------------------------------------------------------------

    @admin.action(description="Send a test event", permissions=["test"])
    def send_test_event(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> None:
        for webhook in queryset:
            send_test_and_report(request, webhook)

    @admin.action(description="Enable", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> None:
        self._enable(request, queryset, resend_skipped=False)

    @admin.action(description="Re-enable and resend skipped", permissions=["change"])
    def enable_and_resend(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> None:
        self._enable(request, queryset, resend_skipped=True)

    def _enable(
        self, request: HttpRequest, queryset: QuerySet[Webhook], *, resend_skipped: bool
    ) -> None:
        for webhook in queryset:
            try:
                resent = operations.enable(webhook, resend_skipped=resend_skipped)
            except operations.OperationError as exc:
                messages.error(request, f"{webhook}: {exc}")
                continue
            text = f"Enabled {webhook}."
            if resend_skipped:
                noun = "delivery" if resent == 1 else "deliveries"
                text = f"Enabled {webhook} and queued {resent} skipped {noun} to send again."
            messages.success(request, text)

    @admin.action(description="Disable", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> None:
        reason = f"Disabled by {request.user} in the admin."
        for webhook in queryset:
            operations.disable(webhook, reason)
        messages.success(request, f"Disabled {len(queryset)} webhook(s).")

    @admin.action(description="Rotate secret…", permissions=["rotate"])
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> HttpResponse:
        return self._rotate(request, list(queryset), action="rotate_secret")

    @admin.action(description="Recover failed deliveries…", permissions=["recover"])
    def recover_failed(
        self, request: HttpRequest, queryset: QuerySet[Webhook]
    ) -> HttpResponse | None:
        return self._recover(request, list(queryset), action="recover_failed")

    # --- buttons on the change page -----------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path(
                "<int:pk>/send-test/",
                view(require_POST(self.send_test_view)),
                name="webhooks_app_webhook_send_test",
            ),
            path(
                "<int:pk>/rotate-secret/",
                view(self.rotate_view),
                name="webhooks_app_webhook_rotate",
            ),
            path("<int:pk>/recover/", view(self.recover_view), name="webhooks_app_webhook_recover"),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = {
            **(extra_context or {}),
            "can_test": self.has_test_permission(request),
            "can_rotate": self.has_rotate_permission(request),
            "can_recover": self.has_recover_permission(request),
        }
        window = request.GET.get("window", "24h")
        if window not in ACTIVITY_WINDOWS:
            window = "24h"
        length, bucket = ACTIVITY_WINDOWS[window]
        now = timezone.now()
        numeric = str(object_id).isdigit()
        if numeric and self.has_view_or_change_permission(request):
            buckets = stats.webhook_activity(int(object_id), now - length, now, bucket)
            context |= {
                "activity_chart": activity_chart(buckets, bucket),
                "activity_window": window,
                "activity_windows": list(ACTIVITY_WINDOWS),
            }
        declared = numeric and (
            Webhook.objects.filter(pk=object_id, managed_by_settings=True).exists()
        )
        if declared:
            # Nothing on the page can be saved (settings are the source of truth): no Save
            # buttons that would only pretend.
            context |= {
                "show_save": False,
                "show_save_and_continue": False,
                "show_save_and_add_another": False,
            }
        return super().change_view(request, object_id, form_url, context)

    def send_test_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        webhook = self.object_for(request, pk, self.has_test_permission(request))
        send_test_and_report(request, webhook)
        return self.back_to(webhook)

    def rotate_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        webhook = self.object_for(request, pk, self.has_rotate_permission(request))
        return self._rotate(request, [webhook])

    def recover_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        webhook = self.object_for(request, pk, self.has_recover_permission(request))
        return self._recover(request, [webhook]) or self.back_to(webhook)

    # --- the two intermediate pages ------------------------------------------------------------

    def response_add(
        self, request: HttpRequest, obj: Webhook, post_url_continue: str | None = None
    ) -> HttpResponse:
        """Right after "Save": the new webhook's secret, shown this once (as the API's create
        response and Stripe's reveal do), on a page that is never cached."""
        if "_addanother" in request.POST or "_popup" in request.POST:
            return super().response_add(request, obj, post_url_continue)
        response = self._page(request, "created.html", [obj], webhook=obj, title="Webhook added")
        response["Cache-Control"] = "no-store"
        return response

    def _page(
        self, request: HttpRequest, template: str, webhooks: list[Webhook], **context: Any
    ) -> TemplateResponse:
        return TemplateResponse(
            request,
            f"admin/webhooks_app/webhook/{template}",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "webhooks": webhooks,
                "selected": [w.pk for w in webhooks],
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "media": self.media,
                **context,
            },
        )

    def _recover(
        self, request: HttpRequest, webhooks: list[Webhook], action: str = ""
    ) -> TemplateResponse | None:
        applying = request.method == "POST" and "apply" in request.POST
        initial = {"since": timezone.now() - datetime.timedelta(hours=24)}
        form = RecoverForm(request.POST if applying else None, initial=initial)
        if applying and form.is_valid():
            since, until = form.cleaned_data["since"], form.cleaned_data["until"]
            try:
                queued = sum(operations.recover(hook, since, until) for hook in webhooks)
            except operations.OperationError as exc:
                form.add_error("until", str(exc))
            else:
                messages.success(
                    request,
                    f"Queued {queued} failed deliver{'y' if queued == 1 else 'ies'} of "
                    f"{len(webhooks)} webhook(s) created since "
                    f"{timezone.localtime(since):%Y-%m-%d %H:%M %Z}.",
                )
                return None
        return self._page(
            request,
            "recover.html",
            webhooks,
            form=form,
            action=action,
            title="Recover failed deliveries",
        )

    def _rotate(
        self, request: HttpRequest, webhooks: list[Webhook], action: str = ""
    ) -> TemplateResponse:
        applying = request.method == "POST" and "apply" in request.POST
        form = RotateForm(request.POST if applying else None)
        if applying and form.is_valid():
            grace = datetime.timedelta(seconds=int(form.cleaned_data["grace"]))
            results: list[tuple[Webhook, str, str]] = []
            for hook in webhooks:
                try:
                    results.append((hook, operations.rotate_secret(hook, grace=grace), ""))
                except operations.OperationError as exc:
                    results.append((hook, "", str(exc)))
            response = self._page(
                request, "rotate_done.html", webhooks, results=results, title="New secrets"
            )
            # The new secret is shown this once: never cached, never put in a message cookie.
            response["Cache-Control"] = "no-store"
            return response
        return self._page(
            request, "rotate.html", webhooks, form=form, action=action, title="Rotate secrets"
        )


def send_test_and_report(request: HttpRequest, webhook: Webhook) -> None:
    try:
        attempt = operations.send_test(webhook, user=request.user)
    except operations.OperationError as exc:
        messages.error(request, f"{webhook}: {exc}")
        return
    text = f"Test event to {webhook}: {attempt.summary} in {attempt.duration_ms} ms."
    hint = operations.reenable_hint(webhook, attempt)
    if hint:
        text += f" {hint}"
    if attempt.outcome == attempt.Outcome.SUCCEEDED:
        messages.success(request, text)
    else:
        messages.error(request, text)
