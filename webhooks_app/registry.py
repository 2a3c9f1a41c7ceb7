"""What this site can emit: the watched models with their options, and the event catalogue.

Both checks.py (to validate) and signal_handlers.py (to connect) read the configuration through
here, so a model label is resolved and its options interpreted in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Any

from django.apps import apps
from django.db import models

from webhooks_app.conf import SENSITIVE_FIELD_MARKERS, app_settings

MODEL_EVENTS = ("create", "update", "delete")
STATUS_EVENTS = ("publish", "unpublish")
USER_EVENT_NAMES = ("user.create", "user.login")
TEST_EVENT = "webhook.test"
MODEL_OPTIONS = frozenset(
    {"name", "fields", "exclude", "serializer", "status_field", "published_value", "previous"}
)
# Where an update's ``previous`` comes from: the values the instance was loaded with (no
# query), or the row as stored, read just before the save (one more query per update).
PREVIOUS_LOADED = "loaded"
PREVIOUS_STORED = "stored"
PREVIOUS_CHOICES = (PREVIOUS_LOADED, PREVIOUS_STORED)
EVENT_NAME_PATTERN = re.compile(r"^[a-z0-9_]+(?:[.\-][a-z0-9_]+)*$", re.IGNORECASE)


@dataclass(frozen=True)
class WatchedModel:
    """One entry of ``WEBHOOKS["MODELS"]``, resolved against the app registry."""

    label: str
    model: type[models.Model]
    name: str
    fields: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    serializer: str | None = None
    status_field: str | None = None
    published_value: Any = None
    previous: str = PREVIOUS_LOADED
    options: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def emits_status_events(self) -> bool:
        return self.status_field is not None

    @cached_property
    def data_field_names(self) -> tuple[str, ...]:
        """Concrete fields that go into ``data`` (the primary key always does)."""
        concrete = [f for f in self.model._meta.concrete_fields if not f.many_to_many]
        pk_name = self.model._meta.pk.name if self.model._meta.pk else "id"
        if self.fields is not None:
            wanted = set(self.fields) | {pk_name}
            return tuple(f.name for f in concrete if f.name in wanted)
        excluded = set(self.exclude)
        return tuple(
            f.name
            for f in concrete
            if f.name == pk_name or (f.name not in excluded and not is_sensitive(f.name))
        )

    @property
    def snapshots_loaded_state(self) -> bool:
        """Whether instances keep the values they were loaded with, for ``previous``. A
        custom serializer may read anything (related objects too): it gets the stored row."""
        return self.previous == PREVIOUS_LOADED and not self.serializer

    @cached_property
    def read_attnames(self) -> tuple[str, ...]:
        """The attributes holding ``read_field_names`` (``author_id`` for ``author``)."""
        return tuple(
            str(getattr(self.model._meta.get_field(name), "attname", name))
            for name in self.read_field_names
        )

    @cached_property
    def read_field_names(self) -> tuple[str, ...]:
        """What must be loaded to build ``data`` and judge the status events."""
        names = self.data_field_names
        if self.status_field and self.status_field not in names:
            names = (*names, self.status_field)
        return names


def is_sensitive(field_name: str) -> bool:
    lowered = field_name.lower()
    return any(marker in lowered for marker in SENSITIVE_FIELD_MARKERS)


def default_model_name(model: type[models.Model]) -> str:
    return model._meta.label


def resolve_model(label: str) -> type[models.Model] | None:
    try:
        return apps.get_model(label)
    except (LookupError, ValueError):
        return None


@cache
def watched_models() -> dict[type[models.Model], WatchedModel]:
    """The configured models that exist, keyed by model class; invalid entries are left out.

    checks.py reports the invalid ones; here they are skipped so that a typo in one entry does
    not stop the others from emitting.
    """
    configured = app_settings.MODELS
    if not isinstance(configured, dict):
        return {}
    result: dict[type[models.Model], WatchedModel] = {}
    for label, options in configured.items():
        if not isinstance(label, str):
            continue
        model = resolve_model(label)
        if model is None:
            continue
        options = options if isinstance(options, dict) else {}
        fields = options.get("fields")
        exclude = options.get("exclude") or ()
        result[model] = WatchedModel(
            label=label,
            model=model,
            name=str(options.get("name") or default_model_name(model)),
            fields=tuple(fields) if isinstance(fields, (list, tuple)) else None,
            exclude=tuple(exclude) if isinstance(exclude, (list, tuple)) else (),
            serializer=options.get("serializer"),
            status_field=options.get("status_field"),
            published_value=options.get("published_value"),
            previous=str(options.get("previous") or PREVIOUS_LOADED),
            options=options,
        )
    return result


def watched_model_names() -> set[str]:
    return {watched.name for watched in watched_models().values()}


def clear_caches() -> None:
    """Forget the resolved configuration (the WEBHOOKS setting changed)."""
    watched_models.cache_clear()
    event_catalogue.cache_clear()


@cache
def event_catalogue() -> dict[str, str]:
    """Every event name this site can send, with a description, for subscribers to choose."""
    catalogue: dict[str, str] = {
        "create": "A watched object was created.",
        "update": "A watched object was changed (with its previous state).",
        "delete": "A watched object was deleted (with its last state).",
    }
    if any(watched.emits_status_events for watched in watched_models().values()):
        catalogue["publish"] = "A watched object's status changed to published."
        catalogue["unpublish"] = "A watched object's status changed from published."
    user_events = app_settings.USER_EVENTS
    if isinstance(user_events, (list, tuple)):
        if "user.create" in user_events:
            catalogue["user.create"] = "A user account was created."
        if "user.login" in user_events:
            catalogue["user.login"] = "A user logged in."
    custom = app_settings.EVENTS
    if isinstance(custom, dict):
        for name, description in custom.items():
            catalogue[str(name)] = str(description or "")
    catalogue[TEST_EVENT] = "A test event sent on request to one webhook."
    return catalogue


def is_valid_pattern(pattern: str, known: set[str] | None = None) -> bool:
    """An event subscription: a known name, ``*``, or a prefix wildcard such as ``user.*``."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return bool(EVENT_NAME_PATTERN.match(pattern[:-2]))
    if known is not None:
        return pattern in known
    return bool(EVENT_NAME_PATTERN.match(pattern))
