"""Query filters for the delivery and event lists (django-filter).

Each filter is backed by an index on Delivery or Event (house rule 9).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django_filters import fields as filter_fields
from django_filters import rest_framework as filters

from webhooks_app.models import Delivery, DeliveryStatus, Event

STATUS_CLASSES = {
    "2xx": Q(last_status_code__gte=200, last_status_code__lt=300),
    "3xx": Q(last_status_code__gte=300, last_status_code__lt=400),
    "4xx": Q(last_status_code__gte=400, last_status_code__lt=500),
    "5xx": Q(last_status_code__gte=500, last_status_code__lt=600),
    # No response at all: a timeout, a refused connection, a DNS error, or not attempted yet.
    "none": Q(last_status_code__isnull=True),
}


class UtcDateTimeField(filter_fields.IsoDateTimeField):
    """An ISO 8601 date-time normalised to UTC.

    Python accepts offsets up to ±23:59 but PostgreSQL only up to ±15:59, so an unusual but
    valid offset reached the database as a 500. In UTC every offset is fine; a moment that
    cannot be expressed in UTC (year 1 with a positive offset) is an invalid date-time.
    """

    def to_python(self, value: Any) -> datetime | None:
        parsed: datetime | None = super().to_python(value)
        if parsed is None or parsed.tzinfo is None:
            return parsed
        try:
            return parsed.astimezone(UTC)
        except OverflowError as error:
            raise ValidationError(self.error_messages["invalid"], code="invalid") from error


class UtcDateTimeFilter(filters.IsoDateTimeFilter):
    field_class = UtcDateTimeField


def created_after() -> UtcDateTimeFilter:
    # Two filters rather than one range, so that an error names the parameter that has it.
    return UtcDateTimeFilter(
        field_name="created_at",
        lookup_expr="gte",
        help_text="Created at or after this ISO 8601 date-time.",
    )


def created_before() -> UtcDateTimeFilter:
    return UtcDateTimeFilter(
        field_name="created_at",
        lookup_expr="lte",
        help_text="Created at or before this ISO 8601 date-time.",
    )


class DeliveryFilter(filters.FilterSet):
    status = filters.ChoiceFilter(choices=DeliveryStatus.choices)
    event = filters.CharFilter(field_name="event__name", help_text="Event name.")
    model = filters.CharFilter(field_name="event__model", help_text="Payload model name.")
    webhook = filters.NumberFilter(
        field_name="webhook_id",
        help_text="Webhook id.",
        # Bounded so that a huge number is a 400, not an overflow in the database driver.
        min_value=0,
        max_value=2**63 - 1,
        decimal_places=0,
    )
    status_class = filters.ChoiceFilter(
        choices=[(key, key) for key in STATUS_CLASSES],
        method="filter_status_class",
        help_text="Class of the last response's status code; none = no response.",
    )
    created_after = created_after()
    created_before = created_before()

    class Meta:
        model = Delivery
        fields = [
            "status",
            "event",
            "model",
            "webhook",
            "status_class",
            "created_after",
            "created_before",
        ]

    def filter_status_class(
        self, queryset: QuerySet[Delivery], name: str, value: str
    ) -> QuerySet[Delivery]:
        return queryset.filter(STATUS_CLASSES[value])


class EventFilter(filters.FilterSet):
    event = filters.CharFilter(field_name="name", help_text="Event name.")
    model = filters.CharFilter(field_name="model", help_text="Payload model name.")
    object_id = filters.CharFilter(field_name="object_id")
    created_after = created_after()
    created_before = created_before()

    class Meta:
        model = Event
        fields = ["event", "model", "object_id", "created_after", "created_before"]
