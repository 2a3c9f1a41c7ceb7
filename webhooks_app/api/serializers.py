"""Webhook serializers and the bodies of the webhook actions (test, rotate-secret, recover).

The rules are the ones ``checks.py`` applies to ``WEBHOOKS["ENDPOINTS"]`` (header names,
protected headers, bounds) and ``targets.py`` applies to URLs, so a webhook the API accepts is
one the settings would accept too. Error messages never repeat a secret or a header value.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from webhooks_app import checks, delivery, operations, registry, rules, signing, targets
from webhooks_app.conf import app_settings
from webhooks_app.delivery import PROTECTED_HEADERS
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
        min_length=16,
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
        max_value=checks.MAX_TIMEOUT,
        help_text=f"Seconds, > 0 and <= {checks.MAX_TIMEOUT:g}; null = the site default.",
    )
    retries = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=0,
        max_value=checks.MAX_RETRIES,
        help_text=f"0 to {checks.MAX_RETRIES}; null = the site default.",
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
            "managed_by_settings",
            "owner",
            "consecutive_failures",
            "last_delivery_at",
            "last_delivery_status",
            "previous_secret_expires_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "disabled_reason",
            "owner",
            "previous_secret_expires_at",
            "updated_at",
        ]

    def validate_url(self, value: str) -> str:
        try:
            targets.check_target_url(value)
        except targets.TargetNotAllowed as exc:
            raise serializers.ValidationError(str(exc)) from None
        return value

    def validate_max_in_flight(self, value: int | None) -> int | None:
        problem = rules.max_in_flight_error(value)
        if problem:
            raise serializers.ValidationError(f"The value {problem}")
        return value

    def validate_rate_limit(self, value: float | None) -> float | None:
        problem = rules.rate_limit_error(value)
        if problem:
            raise serializers.ValidationError(f"The value {problem}")
        return value

    def validate_secret(self, value: str) -> str:
        if self.instance is not None:
            raise serializers.ValidationError(
                "The secret cannot be changed here; use the rotate-secret action."
            )
        if any(ch.isspace() or not ch.isprintable() for ch in value):
            raise serializers.ValidationError("The secret must not contain spaces or controls.")
        return value

    def validate_events(self, value: list[str]) -> list[str]:
        known = set(registry.event_catalogue())
        wrong = [pattern for pattern in value if not registry.is_valid_pattern(pattern, known)]
        if wrong:
            raise serializers.ValidationError(
                f"Not a known event name or wildcard: {', '.join(map(repr, wrong))}. "
                "See event-types/ for the names; wildcards are * and prefix.*."
            )
        return value

    def validate_models(self, value: list[str]) -> list[str]:
        # "user" is the model of the user events, as in checks.py's ENDPOINTS rule.
        known = registry.watched_model_names() | {"user"}
        wrong = [name for name in value if name not in known]
        if wrong:
            raise serializers.ValidationError(
                f"Not the name of a watched model: {', '.join(map(repr, wrong))}. "
                f"Watched model names: {', '.join(sorted(known))}."
            )
        return value

    def validate_headers(self, value: dict[str, str]) -> dict[str, str]:
        problems = checks.check_headers("headers", value)
        if problems:
            raise serializers.ValidationError([str(problem.msg) for problem in problems])
        # A client that sends back what it read keeps the credentials it could not see.
        stored = self.instance.headers if isinstance(self.instance, Webhook) else {}
        return {
            name: stored[name] if text == delivery.REDACTED and name in stored else text
            for name, text in value.items()
        }

    def validate_timeout(self, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise serializers.ValidationError(
                f"Seconds, greater than 0 and at most {checks.MAX_TIMEOUT:g}."
            )
        return value

    def validate_signature_header(self, value: str) -> str:
        if value and not checks.HEADER_NAME.match(value):
            raise serializers.ValidationError("Not a valid HTTP header name.")
        if value.lower() in PROTECTED_HEADERS:
            raise serializers.ValidationError(
                f"{value!r} is a header django-webhooks sends itself."
            )
        return value

    def validate_signature_prefix(self, value: str | None) -> str | None:
        if value is not None and ("\r" in value or "\n" in value or len(value) > 32):
            raise serializers.ValidationError("At most 32 characters, without CR or LF.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # The hex signature header is ours too: a custom header of that name would be dropped
        # at send time, so refuse it here where the user can see why.
        signature_header = attrs.get("signature_header")
        if signature_header is None and self.instance is not None:
            signature_header = self.instance.signature_header
        signature_header = signature_header or str(app_settings.SIGNATURE_HEADER)
        headers = attrs.get("headers")
        if headers is None and self.instance is not None:
            headers = self.instance.headers
        clash = [n for n in headers or {} if str(n).lower() == signature_header.lower()]
        if clash:
            raise serializers.ValidationError(
                {"headers": [f"{clash[0]!r} is this webhook's signature header."]}
            )
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
    error_class = serializers.CharField()
    error = serializers.CharField(source="error_message")
    response_excerpt = serializers.SerializerMethodField()

    EXCERPT_CHARS = 1000

    def get_response_excerpt(self, attempt: Any) -> str:
        return str(attempt.response_body)[: self.EXCERPT_CHARS]


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


class QueuedSerializer(serializers.Serializer[Any]):
    queued = serializers.IntegerField(help_text="How many deliveries were queued.")
