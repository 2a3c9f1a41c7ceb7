"""System checks for ``settings.WEBHOOKS`` and the django-q2 settings it relies on.

Every message names the setting and the rule it broke; IDs are stable (README, "System
checks"). Errors stop ``runserver``/``migrate``; warnings are printed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.core.exceptions import FieldDoesNotExist
from django.utils.module_loading import import_string

from webhooks_app import encryption, registry, rules, targets
from webhooks_app.conf import DEFAULTS, app_settings
from webhooks_app.models import Webhook

HEADER_NAME = rules.HEADER_NAME
ENDPOINT_KEYS = frozenset(
    {
        "name",
        "url",
        "events",
        "models",
        "secret",
        "headers",
        "timeout",
        "retries",
        "max_in_flight",
        "rate_limit",
        "disable_after_seconds",
        "disable_after_failures",
        "method",
        "signature_header",
        "signature_prefix",
        "active",
    }
)
METHODS = rules.METHODS
# What DRF's SimpleRateThrottle.parse_rate accepts: a count, "/", then s, m, h or d first.
THROTTLE_RATE = re.compile(r"^[0-9]+/[smhd][a-z]*$")
MAX_TIMEOUT = rules.MAX_TIMEOUT
MAX_RETRIES = rules.MAX_RETRIES


def _error(number: int, message: str, hint: str | None = None) -> Error:
    return Error(message, hint=hint, id=f"webhooks_app.E{number:03d}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_string_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value)


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    user_settings = app_settings.user_settings
    if user_settings is None:
        return []
    if not isinstance(user_settings, dict):
        return [
            _error(
                1,
                f"WEBHOOKS must be a dict, not {type(user_settings).__name__}.",
                'Write WEBHOOKS = {"MODELS": {...}, ...} in your settings.',
            )
        ]
    errors: list[CheckMessage] = []
    unknown = sorted(str(key) for key in set(user_settings) - set(DEFAULTS))
    if unknown:
        errors.append(
            _error(
                2,
                f"WEBHOOKS has unknown key(s): {', '.join(unknown)}.",
                f"Valid keys: {', '.join(sorted(DEFAULTS))}.",
            )
        )
    for check in _SETTING_CHECKS:
        errors.extend(check())
    return errors


def _check_models() -> list[CheckMessage]:
    configured = app_settings.MODELS
    if not isinstance(configured, dict):
        return [
            _error(
                3,
                "WEBHOOKS['MODELS'] must be a dict of model labels to options, or a list.",
                'For example {"blog.BlogPost": {"name": "blogPost"}}.',
            )
        ]
    errors: list[CheckMessage] = []
    names: dict[str, str] = {}
    for label, options in configured.items():
        where = f"WEBHOOKS['MODELS'][{label!r}]"
        model = registry.resolve_model(label) if isinstance(label, str) else None
        if model is None:
            errors.append(
                _error(
                    3,
                    f"{where}: {label!r} is not an installed model.",
                    'Use "app_label.ModelName" of a model in INSTALLED_APPS.',
                )
            )
            continue
        if not isinstance(options, dict):
            errors.append(_error(4, f"{where} must be a dict of options."))
            continue
        unknown = sorted(str(key) for key in set(options) - registry.MODEL_OPTIONS)
        if unknown:
            errors.append(
                _error(
                    4,
                    f"{where} has unknown option(s): {', '.join(unknown)}.",
                    f"Valid options: {', '.join(sorted(registry.MODEL_OPTIONS))}.",
                )
            )
        field_names = {f.name for f in model._meta.concrete_fields}
        if "fields" in options and "exclude" in options:
            errors.append(_error(4, f"{where}: give 'fields' or 'exclude', not both."))
        for key in ("fields", "exclude"):
            if key not in options:
                continue
            value = options[key]
            if not _is_string_list(value):
                errors.append(_error(4, f"{where}['{key}'] must be a list of field names."))
                continue
            missing = [name for name in value if name not in field_names]
            if missing:
                errors.append(
                    _error(
                        4,
                        f"{where}['{key}'] names unknown field(s): {', '.join(missing)}.",
                        f"Fields of {label}: {', '.join(sorted(field_names))}.",
                    )
                )
        if options.get("previous", registry.PREVIOUS_LOADED) not in registry.PREVIOUS_CHOICES:
            errors.append(
                _error(
                    4,
                    f"{where}['previous'] must be one of "
                    f"{', '.join(map(repr, registry.PREVIOUS_CHOICES))}.",
                    "'loaded' compares with the values the instance was loaded with; 'stored' "
                    "reads the stored row before each update (one more query).",
                )
            )
        name = options.get("name", registry.default_model_name(model))
        if not isinstance(name, str) or not name:
            errors.append(_error(4, f"{where}['name'] must be a non-empty string."))
        elif name in names:
            errors.append(
                _error(
                    4,
                    f"{where}['name'] {name!r} is already the name of {names[name]}.",
                    "Each watched model needs its own payload name.",
                )
            )
        else:
            names[name] = label
        serializer = options.get("serializer")
        if serializer is not None:
            errors.extend(_check_import(5, f"{where}['serializer']", serializer))
        status_field = options.get("status_field")
        if status_field is not None:
            try:
                model._meta.get_field(status_field)
            except (FieldDoesNotExist, TypeError):
                errors.append(
                    _error(
                        6, f"{where}['status_field'] {status_field!r} is not a field of {label}."
                    )
                )
            if "published_value" not in options:
                errors.append(
                    _error(
                        6,
                        f"{where} has 'status_field' but no 'published_value'.",
                        'Give the value that means published, e.g. "published".',
                    )
                )
        elif "published_value" in options:
            errors.append(_error(6, f"{where} has 'published_value' but no 'status_field'."))
    return errors


def _check_import(number: int, where: str, path: Any) -> list[CheckMessage]:
    if not isinstance(path, str):
        return [_error(number, f"{where} must be a dotted import path string.")]
    try:
        target = import_string(path)
    except ImportError as exc:
        return [_error(number, f"{where}: cannot import {path!r} ({exc}).")]
    if not callable(target):
        return [_error(number, f"{where}: {path!r} is not callable.")]
    return []


def _located(where: str, message: str) -> str:
    """A rule's message placed after the setting it is about, in the sentence style of every
    other check ("WEBHOOKS['TIMEOUT'] must be ...")."""
    if message.startswith("Must "):
        return f"{where} m{message[1:]}"
    return f"{where}: {message}"


def _from_rules(number: int, where: str, found: list[rules.Problem]) -> list[CheckMessage]:
    return [_error(number, _located(where, problem.message)) for problem in found]


def _check_timeout(number: int, where: str, value: Any) -> list[CheckMessage]:
    if value is None:
        return [_error(number, f"{where} must be a number of seconds, not None.")]
    return _from_rules(number, where, rules.timeout_problems(value))


def _check_retries(number: int, where: str, value: Any) -> list[CheckMessage]:
    if value is None:
        return [_error(number, f"{where} must be a whole number, not None.")]
    return _from_rules(number, where, rules.retries_problems(value))


def _check_endpoints() -> list[CheckMessage]:
    """Declared endpoints, by the rules every webhook obeys (rules.py). A URL that points
    inside the network is E030: judged without DNS here (no lookups at start-up), and again
    at every connection."""
    endpoints = app_settings.ENDPOINTS
    if not isinstance(endpoints, (list, tuple)):
        return [_error(7, "WEBHOOKS['ENDPOINTS'] must be a list of dicts.")]
    errors: list[CheckMessage] = []
    seen: set[str] = set()
    for index, endpoint in enumerate(endpoints):
        where = f"WEBHOOKS['ENDPOINTS'][{index}]"
        if not isinstance(endpoint, dict):
            errors.append(_error(7, f"{where} must be a dict."))
            continue
        unknown = sorted(str(key) for key in set(endpoint) - ENDPOINT_KEYS)
        if unknown:
            errors.append(
                _error(
                    7,
                    f"{where} has unknown key(s): {', '.join(unknown)}.",
                    f"Valid keys: {', '.join(sorted(ENDPOINT_KEYS))}.",
                )
            )
        key = str(endpoint.get("name") or endpoint.get("url"))
        if key in seen:
            errors.append(
                _error(7, f"{where} duplicates endpoint {key!r}.", "Give each a distinct 'name'.")
            )
        seen.add(key)
        for problem in rules.endpoint_problems(endpoint, Webhook.RULED_FIELDS):
            if problem.code == rules.FORBIDDEN_TARGET:
                errors.append(
                    _error(
                        30,
                        f"{where}['url'] ({key!r}): {problem.message}",
                        "Declared endpoints obey the same rules as the API's; the same target "
                        "would also be refused when connecting.",
                    )
                )
            else:
                message = _located(f"{where}['{problem.field}']", problem.message)
                if problem.field == "url":
                    message += f" Got {endpoint.get('url')!r}."
                errors.append(_error(7, message))
    return errors


def _check_signature_header(number: int, where: str, value: Any) -> list[CheckMessage]:
    if not value:
        return [_error(number, f"{where}: {value!r} is not a valid HTTP header name.")]
    return _from_rules(number, where, rules.signature_header_problems(value))


def _check_prefix(number: int, where: str, value: Any) -> list[CheckMessage]:
    if value is None:
        return [_error(number, f'{where} must be text ("" for no prefix), not None.')]
    return _from_rules(number, where, rules.signature_prefix_problems(value))


def _check_events() -> list[CheckMessage]:
    events = app_settings.EVENTS
    if not isinstance(events, dict):
        return [_error(19, "WEBHOOKS['EVENTS'] must be a dict of event names to descriptions.")]
    errors: list[CheckMessage] = []
    builtin = set(registry.MODEL_EVENTS + registry.STATUS_EVENTS + registry.USER_EVENT_NAMES)
    for name in events:
        if not isinstance(name, str) or not registry.EVENT_NAME_PATTERN.match(name):
            errors.append(
                _error(
                    19,
                    f"WEBHOOKS['EVENTS']: {name!r} is not a valid event name.",
                    "Use letters, digits, _ and - in dot-separated parts, e.g. backup.complete.",
                )
            )
        elif name in builtin or name == registry.TEST_EVENT:
            errors.append(_error(19, f"WEBHOOKS['EVENTS']: {name!r} is a built-in event name."))
    return errors


def _check_user_events() -> list[CheckMessage]:
    value = app_settings.USER_EVENTS
    if not _is_string_list(value) or set(value) - set(registry.USER_EVENT_NAMES):
        return [
            _error(
                20,
                "WEBHOOKS['USER_EVENTS'] must be a list drawn from "
                f"{', '.join(registry.USER_EVENT_NAMES)}.",
            )
        ]
    return []


def _check_user_serializer() -> list[CheckMessage]:
    value = app_settings.USER_SERIALIZER
    return [] if value is None else _check_import(21, "WEBHOOKS['USER_SERIALIZER']", value)


def _check_retry_schedule() -> list[CheckMessage]:
    schedule = app_settings.RETRY_SCHEDULE
    where = "WEBHOOKS['RETRY_SCHEDULE']"
    hint = (
        'A list of seconds such as [30, 300, 1800], or {"initial": 60, "factor": 2, "max": 1800}.'
    )
    if isinstance(schedule, dict):
        unknown = set(schedule) - {"initial", "factor", "max"}
        valid = (
            not unknown
            and _is_number(schedule.get("initial"))
            and schedule["initial"] >= 0
            and _is_number(schedule.get("factor", 2))
            and schedule.get("factor", 2) >= 1
            and _is_number(schedule.get("max", 1))
            and schedule.get("max", 1) >= 1
        )
        if not valid:
            return [_error(10, f"{where} has invalid keys or values: {schedule!r}.", hint)]
        return []
    if (
        isinstance(schedule, (list, tuple))
        and schedule
        and all(_is_number(delay) and delay >= 0 for delay in schedule)
    ):
        return []
    return [_error(10, f"{where} must be a non-empty list of seconds >= 0, or a dict.", hint)]


def _check_scalars() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    errors += _check_timeout(8, "WEBHOOKS['TIMEOUT']", app_settings.TIMEOUT)
    errors += _check_retries(9, "WEBHOOKS['RETRIES']", app_settings.RETRIES)
    jitter = app_settings.RETRY_JITTER
    if not _is_number(jitter) or not 0 <= jitter < 1:
        errors.append(_error(11, "WEBHOOKS['RETRY_JITTER'] must be a fraction from 0 to below 1."))
    errors += _check_signature_header(
        12, "WEBHOOKS['SIGNATURE_HEADER']", app_settings.SIGNATURE_HEADER
    )
    errors += _check_prefix(13, "WEBHOOKS['SIGNATURE_PREFIX']", app_settings.SIGNATURE_PREFIX)
    limit = app_settings.RESPONSE_BODY_LIMIT
    if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= 1_048_576:
        errors.append(
            _error(14, "WEBHOOKS['RESPONSE_BODY_LIMIT'] must be a number of bytes from 0 to 1 MiB.")
        )
    queue = app_settings.QUEUE
    if queue is not None and not (isinstance(queue, str) and queue):
        errors.append(
            _error(15, "WEBHOOKS['QUEUE'] must be None or the name of a django-q2 cluster.")
        )
    batch = app_settings.BATCH_SIZE
    if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= 1000:
        errors.append(_error(16, "WEBHOOKS['BATCH_SIZE'] must be a whole number from 1 to 1000."))
    lease = app_settings.LEASE_SECONDS
    if not _is_number(lease) or lease < 10:
        errors.append(_error(17, "WEBHOOKS['LEASE_SECONDS'] must be a number of seconds >= 10."))
    interval = app_settings.DISPATCH_INTERVAL
    if not _is_number(interval) or not 0.1 <= interval <= 10:
        errors.append(_error(18, "WEBHOOKS['DISPATCH_INTERVAL'] must be from 0.1 to 10 seconds."))
    task_seconds = app_settings.TASK_SECONDS
    if not _is_number(task_seconds) or not 0.5 <= task_seconds <= 60:
        errors.append(_error(18, "WEBHOOKS['TASK_SECONDS'] must be from 0.5 to 60 seconds."))
    for key in ("MAX_IN_FLIGHT", "ENDPOINT_MAX_IN_FLIGHT"):
        problem = rules.max_in_flight_error(app_settings._get(key))
        if problem or app_settings._get(key) is None:
            errors.append(_error(27, f"WEBHOOKS['{key}'] {problem or 'must not be None.'}"))
    share = app_settings.RETRY_SHARE
    if not _is_number(share) or not 0 <= share <= 1:
        errors.append(
            _error(
                28,
                "WEBHOOKS['RETRY_SHARE'] must be a fraction from 0 to 1.",
                "0.5 lets retries take half of every endpoint's slots before new events.",
            )
        )
    cache_seconds = app_settings.SUBSCRIPTION_CACHE_SECONDS
    if not _is_number(cache_seconds) or not 0 <= cache_seconds <= 60:
        errors.append(
            _error(29, "WEBHOOKS['SUBSCRIPTION_CACHE_SECONDS'] must be from 0 to 60 seconds.")
        )
    retry_after_max = app_settings.RETRY_AFTER_MAX
    if not _is_number(retry_after_max) or retry_after_max < 1:
        errors.append(_error(22, "WEBHOOKS['RETRY_AFTER_MAX'] must be a number of seconds >= 1."))
    return errors


def _check_api() -> list[CheckMessage]:
    """The REST API's settings (webhooks_app.api)."""
    errors: list[CheckMessage] = []
    for key in ("API_OWNER_SCOPED", "ALLOW_HTTP"):
        if not isinstance(app_settings._get(key), bool):
            errors.append(_error(24, f"WEBHOOKS['{key}'] must be True or False."))
    try:
        targets.parse_allowed(app_settings.ALLOWED_TARGETS)
    except ValueError as exc:
        errors.append(
            _error(
                25,
                f"WEBHOOKS['ALLOWED_TARGETS'] {exc}.",
                'For example ["hooks.internal", "10.0.5.0/24"].',
            )
        )
    rate = app_settings.TEST_THROTTLE_RATE
    if rate is not None and not (isinstance(rate, str) and THROTTLE_RATE.match(rate)):
        errors.append(
            _error(
                26,
                f"WEBHOOKS['TEST_THROTTLE_RATE'] must be None or a rate such as '10/min', "
                f"got {rate!r}.",
            )
        )
    return errors


def _check_failure_policy() -> list[CheckMessage]:
    """When failing webhooks are disabled and who is told (failures.py, notifications.py)."""
    errors: list[CheckMessage] = []
    period = app_settings.DISABLE_AFTER_SECONDS
    if period is not None and (not _is_number(period) or period < rules.DISABLE_AFTER_SECONDS_MIN):
        errors.append(
            _error(
                32,
                "WEBHOOKS['DISABLE_AFTER_SECONDS'] must be None (never disable) or a number "
                f"of seconds >= {rules.DISABLE_AFTER_SECONDS_MIN}, got {period!r}.",
                "432000 is five days, Svix's period.",
            )
        )
    failures = app_settings.DISABLE_AFTER_FAILURES
    if not isinstance(failures, int) or isinstance(failures, bool) or failures < 1:
        errors.append(
            _error(
                33,
                "WEBHOOKS['DISABLE_AFTER_FAILURES'] must be a whole number >= 1, "
                f"got {failures!r}.",
            )
        )
    share = app_settings.DISABLE_WARNING_SHARE
    if share is not None and (not _is_number(share) or not 0 < share < 1):
        errors.append(
            _error(
                34,
                "WEBHOOKS['DISABLE_WARNING_SHARE'] must be None (no warning) or a fraction "
                f"between 0 and 1, got {share!r}.",
                "0.5 warns half-way through the period.",
            )
        )
    notify = app_settings.NOTIFY
    if not isinstance(notify, (list, tuple)) or not set(notify) <= {"owner", "admins"}:
        errors.append(
            _error(
                35,
                f'WEBHOOKS[\'NOTIFY\'] must be a list of "owner" and/or "admins", got {notify!r}.',
            )
        )
    notifier = app_settings.NOTIFIER
    if notifier is not None:
        errors += _check_import(36, "WEBHOOKS['NOTIFIER']", notifier)
    return errors


def _check_secret_keys() -> list[CheckMessage]:
    """The keys webhook secrets are encrypted with (encryption.py)."""
    try:
        keys = encryption.parse_keys(app_settings.SECRET_KEYS)
    except ValueError as exc:
        return [
            _error(
                31,
                f"WEBHOOKS['SECRET_KEYS'] {exc}.",
                "Make one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'",
            )
        ]
    if not keys and not settings.DEBUG:
        return [
            Warning(
                "WEBHOOKS['SECRET_KEYS'] is not set: webhook secrets are encrypted with a key "
                "derived from SECRET_KEY, so rotating SECRET_KEY without keeping the old one "
                "in SECRET_KEY_FALLBACKS makes every webhook secret unreadable.",
                hint="Set WEBHOOKS['SECRET_KEYS'] to a list of Fernet keys kept apart from "
                "the database (see the README's Security section).",
                id="webhooks_app.W004",
            )
        ]
    return []


_SETTING_CHECKS: list[Callable[[], list[CheckMessage]]] = [
    _check_models,
    _check_events,
    _check_user_events,
    _check_user_serializer,
    _check_endpoints,
    _check_retry_schedule,
    _check_scalars,
    _check_api,
    _check_failure_policy,
    _check_secret_keys,
]


def _longest_run() -> float | None:
    """How long one delivery task usually takes at most: it stops claiming after
    TASK_SECONDS, then waits for its last requests (a rate-limit slot, a timeout) and writes
    them. A webhook whose own timeout is longer is only claimed while it still fits in
    Q_CLUSTER["timeout"] (engine.Run), so this need not cover every webhook's."""
    task_seconds, timeout = app_settings.TASK_SECONDS, app_settings.TIMEOUT
    if not (_is_number(task_seconds) and _is_number(timeout)):
        return None
    return float(task_seconds) + float(timeout) + 6


def check_q_cluster(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """django-q2 settings that would make the dispatcher run twice or be killed mid-run."""
    messages: list[CheckMessage] = []
    if not apps.is_installed("django_q"):
        messages.append(
            _error(23, "django_q is not in INSTALLED_APPS.", "Add 'django_q' to INSTALLED_APPS.")
        )
        return messages
    middleware = getattr(settings, "MIDDLEWARE", [])
    if "webhooks_app.middleware.WebhookActorMiddleware" not in middleware:
        messages.append(
            Warning(
                "WebhookActorMiddleware is not in MIDDLEWARE: the payload's 'user' will be "
                "null for changes made in requests.",
                hint="Add 'webhooks_app.middleware.WebhookActorMiddleware' after "
                "AuthenticationMiddleware.",
                id="webhooks_app.W001",
            )
        )
    cluster = getattr(settings, "Q_CLUSTER", {}) or {}
    timeout = cluster.get("timeout")
    retry = cluster.get("retry", 60)
    run_seconds = _longest_run()
    if run_seconds is not None and isinstance(timeout, (int, float)) and timeout <= run_seconds:
        messages.append(
            Warning(
                f"Q_CLUSTER['timeout'] ({timeout}s) does not leave room for a delivery run: "
                f"up to {run_seconds:g}s (TASK_SECONDS, then the slowest request's timeout "
                "and the time to write its outcome).",
                hint="Raise Q_CLUSTER['timeout'] or lower WEBHOOKS['TASK_SECONDS'].",
                id="webhooks_app.W002",
            )
        )
    if _is_number(retry) and _is_number(timeout) and retry <= timeout:
        messages.append(
            Warning(
                f"Q_CLUSTER['retry'] ({retry}s) is not longer than its timeout ({timeout}s): "
                "django-q2 would hand a running task to a second worker.",
                hint="Set retry well above timeout (see the README's django-q2 section).",
                id="webhooks_app.W003",
            )
        )
    return messages


BANNER_TAG = "webhooks_worker_banner"


def check_admin_banner(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The admin index warns when deliveries are due and no worker runs only if our
    ``admin/index.html`` is the one Django finds (webhooks_app before django.contrib.admin)
    or the project's own index carries the tag. Reads template files, never the database."""
    if not apps.is_installed("django.contrib.admin"):
        return []
    from django.template import TemplateDoesNotExist, TemplateSyntaxError, engines
    from django.template.backends.django import DjangoTemplates

    engine = next((e for e in engines.all() if isinstance(e, DjangoTemplates)), None)
    if engine is None:
        return []
    ours = str(Path(apps.get_app_config("webhooks_app").path) / "templates")
    origin = ""
    skip: list[Any] = []
    # A project index that extends "admin/index.html" hands over to the next one Django
    # finds: follow the chain (a few links at most) to see whether ours or the tag is in it.
    for _ in range(5):
        try:
            found, found_origin = engine.engine.find_template("admin/index.html", skip=skip)
        except (TemplateDoesNotExist, TemplateSyntaxError):
            break
        origin = str(getattr(found_origin, "name", "") or "")
        if origin.startswith(ours):
            return []
        source = getattr(found, "source", "") or ""
        if BANNER_TAG in source:
            return []
        if not re.search(r"""\{%\s*extends\s+["']admin/index\.html["']""", source):
            break
        skip.append(found_origin)
    if not origin:
        return []
    return [
        Warning(
            "The admin index will not warn when deliveries are due and no worker is running: "
            f"Django uses {origin}, not webhooks_app's.",
            hint="List 'webhooks_app' before 'django.contrib.admin' in INSTALLED_APPS, or put "
            "{% load webhooks_admin %}{% webhooks_worker_banner %} in your admin/index.html. "
            "The webhooks pages show the warning either way.",
            id="webhooks_app.W005",
        )
    ]
