"""Webhook serializers and the bodies of the webhook actions (test, rotate-secret, recover).

A webhook's fields are judged by rules.py, the rules the model, the admin and the settings
checks use too, so a webhook the API accepts is one they would accept. Error messages never
repeat a secret or a header value.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from webhooks_app import delivery, operations, registry, rules, signing
from webhooks_app.models import Webhook


class RejectUnknownFieldsMixin:
    """Unknown fields are a 400 naming them, not silently dropped (a typo such as ``event``
    for ``events`` would otherwise subscribe to everything)."""

    fields: Any
    initial_data: Any

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {name: ["Unknown field; it is not accepted here."] for name in unknown}
                )
        return super().to_internal_value(data)  # type: ignore[misc]


@extend_schema_field(OpenApiTypes.URI)
class TargetURLField(serializers.CharField):
    """A plain string field, so the one message about a bad URL is targets.py's, with the rule."""


class RedactedHeadersField(serializers.DictField):
    """Custom headers, read back with credentials (Authorization, tokens, keys) redacted."""

    def to_representation(self, value: Any) -> dict[str, Any]:
        return delivery.redact_headers(super().to_representation(value))


class SecretField(serializers.CharField):
    """Written in full; read back masked, except in the response that created it."""

    def to_representation(self, value: Any) -> str:
        if self.context.get("reveal_secret"):
            return str(value)
        return signing.mask_secret(str(value))


class WebhookSerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer[Webhook]):
    url = TargetURLField(
        max_length=2000,
        help_text="Absolute https URL (http only if WEBHOOKS['ALLOW_HTTP']); private, loopback "
        "and link-local targets are refused unless in WEBHOOKS['ALLOWED_TARGETS'].",
    )
    secret = SecretField(
        required=False,
        max_length=255,
        help_text="Given or generated on create (whsec_...) and returned in full only then; "
        "masked afterwards. Change it with rotate-secret.",
    )
    events = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        max_length=200,
        help_text="Event names from event-types/, or wildcards (*, user.*); empty = all.",
    )
    models = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        max_length=200,
        help_text="Watched model names (payload 'model'); empty = all.",
    )
    headers = RedactedHeadersField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False, max_length=4096),
        required=False,
        help_text="Extra request headers; cannot replace the signature or id headers.",
    )
    timeout = serializers.FloatField(
        required=False,
        allow_null=True,
        help_text=f"Seconds, > 0 and <= {rules.MAX_TIMEOUT:g}; null = the site default.",
    )
    retries = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text=f"0 to {rules.MAX_RETRIES}; null = the site default.",
    )
    max_in_flight = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="Requests in flight to this endpoint at once, across all workers, "
        f"1 to {rules.MAX_IN_FLIGHT_LIMIT}; null = the site default.",
    )
    rate_limit = serializers.FloatField(
        required=False,
        allow_null=True,
        help_text="Requests per second across all workers (0.5 = one every two seconds); "
        "null = no limit. Deliveries over the limit wait; they never fail for it.",
    )

    held_back_since = serializers.DateTimeField(
        source="held_fanout.held_at",
        read_only=True,
        allow_null=True,
        help_text="Since when this endpoint's new events wait as events, not as deliveries: "
        "it has a request out for a while and a deep queue of pending deliveries, which are "
        "made as that queue runs short (once disabled, its new events are skipped at once, "
        "and this stays set until what it was owed is skipped too). null = not held back.",
    )

    class Meta:
        model = Webhook
        fields = [
            "id",
            "name",
            "url",
            "events",
            "models",
            "secret",
            "headers",
            "method",
            "timeout",
            "retries",
            "max_in_flight",
            "rate_limit",
            "signature_header",
            "signature_prefix",
            "is_active",
            "disabled_reason",
            "disabled_at",
            "disable_after_seconds",
            "disable_after_failures",
            "managed_by_settings",
            "owner",
            "consecutive_failures",
            "failing_since",
            "last_delivery_at",
            "last_delivery_status",
            "previous_secret_expires_at",
            "held_back_since",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "disabled_reason",
            "disabled_at",
            "owner",
            "previous_secret_expires_at",
            "updated_at",
        ]

    def validate_secret(self, value: str) -> str:
        if self.instance is not None:
            raise serializers.ValidationError(
                "The secret cannot be changed here; use the rotate-secret action."
            )
        return value

    def validate_headers(self, value: dict[str, str]) -> dict[str, str]:
        # A client that sends back what it read keeps the credentials it could not see.
        stored = self.instance.headers if isinstance(self.instance, Webhook) else {}
        return delivery.restore_redacted(value, stored or {})

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The webhook as it would be saved, by the rules every webhook obeys (rules.py)."""
        values = {
            name: getattr(self.instance, name)
            for name in Webhook.RULED_FIELDS
            if self.instance is not None
        }
        values.update({name: attrs[name] for name in Webhook.RULED_FIELDS if name in attrs})
        # Judge what this request changes (and the headers against the signature header
        # either way): a stored URL that a setting now forbids is not this request's fault.
        changed = set(attrs) & set(Webhook.RULED_FIELDS)
        if changed & {"headers", "signature_header"}:
            changed |= {"headers", "signature_header"}
        found = rules.problems(values, fields=changed)
        if found:
            raise serializers.ValidationError(rules.by_field(found))
        return attrs


class TestSendSerializer(RejectUnknownFieldsMixin, serializers.Serializer[Any]):
    event = serializers.CharField(
        required=False,
        default=registry.TEST_EVENT,
        help_text="An event name from event-types/ (default webhook.test).",
    )

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        # "data" is the payload's key, but also a Serializer attribute: add it by name here.
        fields = dict(super().get_fields())
        fields["data"] = serializers.JSONField(
            required=False, default=None, help_text="The payload's data; default a short message."
        )
        return fields

    def validate_event(self, value: str) -> str:
        if value not in registry.event_catalogue():
            raise serializers.ValidationError(
                f"{value!r} is not an event name this site sends; see event-types/."
            )
        return value


class TestResultSerializer(serializers.Serializer[Any]):
    """What one test attempt got back."""

    delivery = serializers.IntegerField(source="delivery_id")
    event = serializers.CharField(source="delivery.event_id")
    outcome = serializers.CharField()
    status_code = serializers.IntegerField(source="response_status", allow_null=True)
    duration_ms = serializers.IntegerField()
    summary = serializers.CharField(help_text="What happened, in plain words.")
    error_class = serializers.CharField()
    error = serializers.CharField(source="error_message")
    response_excerpt = serializers.SerializerMethodField()
    hint = serializers.SerializerMethodField(
        help_text="What to do next, e.g. how to re-enable a disabled webhook that answered."
    )

    EXCERPT_CHARS = 1000

    def get_response_excerpt(self, attempt: Any) -> str:
        return str(attempt.response_body)[: self.EXCERPT_CHARS]

    def get_hint(self, attempt: Any) -> str:
        return operations.reenable_hint(attempt.delivery.webhook, attempt)


class RotateSecretSerializer(RejectUnknownFieldsMixin, serializers.Serializer[Any]):
    grace_seconds = serializers.IntegerField(
        required=False,
        default=int(operations.DEFAULT_ROTATION_GRACE.total_seconds()),
        min_value=0,
        max_value=int(operations.MAX_ROTATION_GRACE.total_seconds()),
        help_text="How long the old secret keeps signing alongside the new one "
        "(default 86400 = 24 h, max 604800 = 7 days).",
    )


class RotateSecretResultSerializer(serializers.Serializer[Any]):
    secret = serializers.CharField(help_text="The new secret, shown only in this response.")
    previous_secret_expires_at = serializers.DateTimeField()


class RecoverSerializer(RejectUnknownFieldsMixin, serializers.Serializer[Any]):
    since = serializers.DateTimeField(help_text="Failed deliveries created at or after this.")
    until = serializers.DateTimeField(
        required=False, allow_null=True, default=None, help_text="...and before this (optional)."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        until = attrs.get("until")
        if until is not None and until <= attrs["since"]:
            raise serializers.ValidationError({"until": ["Must be later than 'since'."]})
        if attrs["since"] > timezone.now():
            raise serializers.ValidationError({"since": ["Must not be in the future."]})
        return attrs


class EnableSerializer(RejectUnknownFieldsMixin, serializers.Serializer[Any]):
    resend_skipped = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Also send again the deliveries skipped since the webhook was disabled.",
    )


class QueuedSerializer(serializers.Serializer[Any]):
    queued = serializers.IntegerField(help_text="How many deliveries were queued.")
