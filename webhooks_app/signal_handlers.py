"""Receivers for the configured models, turning saves and deletes into ``events.emit``.

Receivers are connected per model (``sender=``), never globally, and reconnected when the
``WEBHOOKS`` setting changes (tests use ``override_settings``). Fixture loads (``raw``) emit
nothing.

The previous state of an update is, by default, what the instance was loaded with (or last
saved with): ``post_init`` keeps a copy of the few attributes the payload needs, which costs
a loaded instance about a microsecond and spares every update a query. An instance not
loaded from the database (built by hand with a primary key), one loaded without some of
those fields, and every instance of a model with ``"previous": "stored"`` (or a custom
serializer) is compared with the stored row instead, read just before the save.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in
from django.core.signals import setting_changed
from django.db import DEFAULT_DB_ALIAS, models
from django.db.models.signals import post_delete, post_init, post_save, pre_save

from webhooks_app import registry, statements, subscriptions
from webhooks_app.conf import app_settings
from webhooks_app.serialization import instance_data, run_serializer, values_data

_PREVIOUS = "_webhooks_previous_state"
_SNAPSHOT = "_webhooks_loaded_state"
# before_save found nobody subscribed to changes of this model and read nothing.
_NOT_READ = object()
_connected: list[tuple[Any, Any, str]] = []


def serialize(watched: registry.WatchedModel, instance: models.Model) -> dict[str, Any]:
    if watched.serializer:
        return run_serializer(watched.serializer, instance)
    return instance_data(instance, watched.data_field_names)


def _watched(sender: type[models.Model]) -> registry.WatchedModel | None:
    return registry.watched_models().get(sender)


def _is_published(watched: registry.WatchedModel, instance: models.Model | None) -> bool:
    if instance is None or watched.status_field is None:
        return False
    return bool(getattr(instance, watched.status_field, None) == watched.published_value)


def _wanted(watched: registry.WatchedModel, names: tuple[str, ...], using: str) -> bool:
    """Whether any active webhook wants one of these events of this model (the process's
    copy of the subscriptions: no query)."""
    return any(subscriptions.anyone_subscribed(name, watched.name, using=using) for name in names)


def _change_events(watched: registry.WatchedModel) -> tuple[str, ...]:
    return ("update", *registry.STATUS_EVENTS) if watched.emits_status_events else ("update",)


def after_init(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    """Keep the values a loaded row starts with. An instance without a primary key is new:
    its first save is a create, which needs no ``previous`` and snapshots what it saved, so
    ``Model(...)`` and ``objects.create()`` copy nothing here."""
    watched = _watched(sender)
    if watched is not None and watched.snapshots_loaded_state and instance.pk is not None:
        _remember(watched, instance)


def _remember(watched: registry.WatchedModel, instance: models.Model) -> None:
    state = instance.__dict__
    # A deferred field is not in __dict__: then the snapshot is incomplete, and unused.
    snapshot = {name: state[name] for name in watched.read_attnames if name in state}
    for name, value in snapshot.items():
        if isinstance(value, (dict, list, set)):
            # A JSONField's dict changed in place must not change what it was.
            snapshot[name] = copy.deepcopy(value)
    state[_SNAPSHOT] = snapshot


class _Loaded(NamedTuple):
    """The snapshot an update's ``previous`` comes from, encoded after the save: a value
    that is still the very object it was loaded as takes its entry from the new payload
    instead of being encoded twice (most fields of an update do not change)."""

    snapshot: dict[str, Any]
    was_published: bool


def _loaded_state(watched: registry.WatchedModel, instance: models.Model) -> _Loaded | None:
    """``previous`` from the snapshot, when the instance came from (or went to) the
    database and the snapshot has every field; None when the stored row must be read."""
    snapshot = instance.__dict__.get(_SNAPSHOT)
    if instance._state.adding or snapshot is None or len(snapshot) != len(watched.read_attnames):
        return None
    was_published = False
    if watched.status_field is not None:
        attname = watched.read_attnames[watched.read_field_names.index(watched.status_field)]
        was_published = snapshot[attname] == watched.published_value
    return _Loaded(snapshot, was_published)


def before_save(
    sender: type[models.Model], instance: models.Model, raw: bool, **kwargs: Any
) -> None:
    watched = _watched(sender)
    if raw or watched is None or not app_settings.ENABLED or instance.pk is None:
        return
    using = kwargs.get("using") or DEFAULT_DB_ALIAS
    if not _wanted(watched, _change_events(watched), using):
        # Nobody would receive what the previous state is needed for: work none out.
        setattr(instance, _PREVIOUS, _NOT_READ)
        return
    if watched.snapshots_loaded_state:
        loaded = _loaded_state(watched, instance)
        if loaded is not None:
            setattr(instance, _PREVIOUS, loaded)
            return
    # Only what the payload and the status events read (a custom serializer may read any).
    field_names = () if watched.serializer else watched.read_field_names
    stored = statements.read_stored_row(sender, instance.pk, field_names, using)
    if stored is not None:
        setattr(instance, _PREVIOUS, (serialize(watched, stored), _is_published(watched, stored)))


def after_save(
    sender: type[models.Model], instance: models.Model, created: bool, raw: bool, **kwargs: Any
) -> None:
    watched = _watched(sender)
    if raw or watched is None or not app_settings.ENABLED:
        return
    from webhooks_app.events import record as emit

    using = kwargs.get("using") or DEFAULT_DB_ALIAS
    previous_state = instance.__dict__.pop(_PREVIOUS, None)
    if watched.snapshots_loaded_state:
        _remember(watched, instance)  # what was just saved is the next save's "previous"
    if previous_state is _NOT_READ and not created:
        return
    if (created or previous_state is None) and not _wanted(
        watched, ("create", *registry.STATUS_EVENTS), using
    ):
        return
    data = serialize(watched, instance)
    common = {"data": data, "model": watched.name, "object_id": instance.pk, "using": using}
    if created or previous_state is None:
        emit("create", **common)
        if _is_published(watched, instance):
            emit("publish", **common)
        return
    previous, was_published = previous_state
    if isinstance(previous_state, _Loaded):
        previous = values_data(
            watched.model, watched.data_field_names, previous_state.snapshot, (instance, data)
        )
    changed = [name for name in data if previous.get(name) != data.get(name)]
    changed += [name for name in previous if name not in data]
    if changed:
        emit("update", previous=previous, changed_fields=changed, **common)
    is_published = _is_published(watched, instance)
    if is_published and not was_published:
        emit("publish", previous=previous, changed_fields=changed, **common)
    elif was_published and not is_published:
        emit("unpublish", previous=previous, changed_fields=changed, **common)


def after_delete(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    watched = _watched(sender)
    if watched is None or not app_settings.ENABLED:
        return
    from webhooks_app.events import record as emit

    last_state = serialize(watched, instance)
    emit(
        "delete",
        data=last_state,
        previous=last_state,
        model=watched.name,
        object_id=instance.pk,
        using=kwargs.get("using"),
    )


# --- built-in user events (opt-in through WEBHOOKS["USER_EVENTS"]) -------------------------


def _user_events() -> set[str]:
    configured = app_settings.USER_EVENTS
    return set(configured) if isinstance(configured, (list, tuple)) else set()


def user_created(
    sender: type[models.Model], instance: models.Model, created: bool, raw: bool, **kwargs: Any
) -> None:
    if raw or not created or "user.create" not in _user_events() or not app_settings.ENABLED:
        return
    from webhooks_app.actor import user_data
    from webhooks_app.events import emit

    emit(
        "user.create",
        data=user_data(instance),
        model="user",
        object_id=instance.pk,
        using=kwargs.get("using"),
    )


def user_logged_in_handler(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if "user.login" not in _user_events() or not app_settings.ENABLED:
        return
    from webhooks_app.actor import user_data
    from webhooks_app.events import emit

    emit("user.login", data=user_data(user), model="user", object_id=user.pk, user=user)


# --- wiring --------------------------------------------------------------------------------


def connect() -> None:
    """Connect receivers for the configured models and the opted-in user events."""
    disconnect()
    for model, watched in registry.watched_models().items():
        uid = f"webhooks_app:{watched.label}"
        for signal, receiver in (
            (post_init, after_init),
            (pre_save, before_save),
            (post_save, after_save),
            (post_delete, after_delete),
        ):
            signal.connect(receiver, sender=model, weak=False, dispatch_uid=uid)
            _connected.append((signal, model, uid))
    if _user_events():
        user_model = get_user_model()
        uid = "webhooks_app:user.create"
        post_save.connect(user_created, sender=user_model, weak=False, dispatch_uid=uid)
        _connected.append((post_save, user_model, uid))
        user_logged_in.connect(user_logged_in_handler, dispatch_uid="webhooks_app:user.login")
        _connected.append((user_logged_in, None, "webhooks_app:user.login"))


def disconnect() -> None:
    while _connected:
        signal, sender, uid = _connected.pop()
        signal.disconnect(sender=sender, dispatch_uid=uid)


def on_setting_changed(setting: str, **kwargs: Any) -> None:
    if setting == "WEBHOOKS":
        registry.clear_caches()
        subscriptions.forget()
        statements.forget()
        connect()


def wire() -> None:
    """Called once from ``AppConfig.ready()``."""
    from webhooks_app.models import Webhook

    connect()
    setting_changed.connect(on_setting_changed, dispatch_uid="webhooks_app:setting_changed")
    # This process sees its own webhook changes at once; others within their cache's life.
    for signal in (post_save, post_delete):
        signal.connect(
            subscriptions.forget, sender=Webhook, dispatch_uid=f"webhooks_app:forget:{signal}"
        )
