"""List filters whose choices cost nothing to compute.

Django's default filters for ``event__name`` would run ``SELECT DISTINCT`` over every event;
the names and models come from the configuration instead (the event catalogue and the
watched models), which is also the list an operator expects to pick from.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from webhooks_app import registry


def event_names() -> list[str]:
    return sorted(registry.event_catalogue())


def model_names() -> list[str]:
    return sorted(registry.watched_model_names() | {"user"})


class _ChoiceFilter(admin.SimpleListFilter):
    lookup_path = ""

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value:
            return queryset.filter(**{self.lookup_path: value})
        return queryset


class EventNameFilter(_ChoiceFilter):
    title = "event"
    parameter_name = "event_name"
    lookup_path = "event_name"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in event_names()]


class EventModelFilter(_ChoiceFilter):
    title = "model"
    parameter_name = "model"
    lookup_path = "event_model"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in model_names()]


class OwnNameFilter(EventNameFilter):
    """The same choices on the Event list itself."""

    parameter_name = "name"
    lookup_path = "name"


class OwnModelFilter(EventModelFilter):
    lookup_path = "model"


STATUS_CLASSES: dict[str, tuple[str, Q]] = {
    "2xx": ("2xx", Q(last_status_code__gte=200, last_status_code__lt=300)),
    "3xx": ("3xx", Q(last_status_code__gte=300, last_status_code__lt=400)),
    "4xx": ("4xx", Q(last_status_code__gte=400, last_status_code__lt=500)),
    "5xx": ("5xx", Q(last_status_code__gte=500, last_status_code__lt=600)),
    # Attempted, but nothing came back: connection refused, DNS, timeout.
    "none": ("no response", Q(last_status_code__isnull=True, attempts__gt=0)),
}


class StatusCodeClassFilter(admin.SimpleListFilter):
    title = "response"
    parameter_name = "code"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _) in STATUS_CLASSES.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        entry = STATUS_CLASSES.get(self.value() or "")
        return queryset.filter(entry[1]) if entry else queryset
