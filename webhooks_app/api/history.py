"""Serializers of what happened: events, deliveries and their attempts (all read-only).

Request and response headers go through ``delivery.redact_headers`` on the way out as well as
on the way in, so a credential a receiver echoes back (``Set-Cookie``) is not shown either.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from webhooks_app.delivery import redact_headers
from webhooks_app.models import Delivery, DeliveryAttempt, Event


@extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}})
class RedactedHeadersField(serializers.Field):  # type: ignore[type-arg]
    def to_representation(self, value: Any) -> dict[str, str]:
        return redact_headers({str(k): str(v) for k, v in (value or {}).items()})


class AttemptSerializer(serializers.ModelSerializer[DeliveryAttempt]):
    request_headers = RedactedHeadersField(read_only=True)
    response_headers = RedactedHeadersField(read_only=True)

    class Meta:
        model = DeliveryAttempt
        fields = [
            "number",
            "trigger",
            "outcome",
            "started_at",
            "duration_ms",
            "request_method",
            "request_url",
            "request_headers",
            "response_status",
            "response_headers",
            "response_body",
            "summary",
            "error_class",
            "error_message",
        ]
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer[Delivery]):
    """A delivery in a list: where it stands, without its attempts."""

    event_name = serializers.CharField(source="event.name", read_only=True)
    model = serializers.CharField(source="event.model", read_only=True)

    class Meta:
        model = Delivery
        fields = [
            "id",
            "event",
            "event_name",
            "model",
            "webhook",
            "status",
            "attempts",
            "max_attempts",
            "next_attempt_at",
            "last_attempt_at",
            "last_status_code",
            "last_error",
            "completed_at",
            "created_at",
        ]
        read_only_fields = fields


class DeliveryDetailSerializer(DeliverySerializer):
    """A delivery with every attempt, oldest first."""

    attempts_log = AttemptSerializer(many=True, read_only=True)

    class Meta(DeliverySerializer.Meta):
        fields = [*DeliverySerializer.Meta.fields, "attempts_log"]
        read_only_fields = fields


class EventSerializer(serializers.ModelSerializer[Event]):
    class Meta:
        model = Event
        fields = ["id", "name", "model", "object_id", "created_at"]
        read_only_fields = fields


class EventDetailSerializer(EventSerializer):
    """An event with the exact payload sent and its deliveries (those the user may see)."""

    payload = serializers.SerializerMethodField()
    deliveries = serializers.SerializerMethodField()

    class Meta(EventSerializer.Meta):
        fields = [*EventSerializer.Meta.fields, "payload", "deliveries"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_payload(self, event: Event) -> Any:
        return event.payload

    @extend_schema_field(DeliverySerializer(many=True))
    def get_deliveries(self, event: Event) -> Any:
        # The view passes the deliveries this user may see; owners never see others'.
        visible = self.context["visible_deliveries"].filter(event=event)
        return DeliverySerializer(visible, many=True, context=self.context).data


class EventTypeSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    description = serializers.CharField()
