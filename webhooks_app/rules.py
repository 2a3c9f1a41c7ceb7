"""The rules for a webhook's fields, written once.

Every way a webhook is made goes through ``problems()``: the model (``Webhook.clean``, which
the admin form runs), the API serializer, the system checks of ``WEBHOOKS["ENDPOINTS"]``, and
the engine's claims (a row made by the ORM behind everyone's back is checked where it is
sent: targets.py at connect time). So the four cannot drift apart: the admin refuses what the
API refuses, with the same messages.

Each problem names its field and carries a message that reads on its own ("Must be a number
of seconds greater than 0 and at most 60."); callers place it (the API and the admin under
the field, the checks after the setting's path).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from webhooks_app import registry, targets
from webhooks_app.conf import app_settings

MAX_TIMEOUT = 60.0
MAX_RETRIES = 50
MAX_IN_FLIGHT_LIMIT = 10_000
RATE_LIMIT_MAX = 10_000.0
SIGNATURE_PREFIX_MAX = 32
SECRET_MIN_LENGTH = 16
SECRET_MAX_LENGTH = 255
# The failure policy (failures.py): a shorter period would disable a webhook over one
# receiver restart; WEBHOOKS['DISABLE_AFTER_SECONDS'] (checks.py) has the same floor.
DISABLE_AFTER_SECONDS_MIN = 60
# The policy's columns are PositiveIntegerFields: this is their range on every database.
POLICY_VALUE_MAX = 2_147_483_647
METHODS = ("POST", "PUT", "PATCH")
HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Headers a webhook's own headers may not replace: what receivers verify and route on.
PROTECTED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "host",
        "user-agent",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "transfer-encoding",
    }
)
FORBIDDEN_TARGET = "forbidden_target"


@dataclass(frozen=True)
class Problem:
    field: str
    message: str
    # "forbidden_target" for a URL that points inside the network (its own check ID).
    code: str = "invalid"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def url_problems(url: Any, *, resolve_names: bool = True) -> list[Problem]:
    if not isinstance(url, str):
        return [Problem("url", "Enter an absolute http:// or https:// URL.")]
    try:
        targets.check_target_url(url, resolve_names=resolve_names)
    except targets.TargetNotAllowed as exc:
        message = str(exc)
        code = FORBIDDEN_TARGET if message.startswith("The target ") else "invalid"
        return [Problem("url", message, code)]
    return []


def event_problems(events: Any) -> list[Problem]:
    if not _is_string_list(events):
        return [Problem("events", "Must be a list of event names or wildcards.")]
    known = set(registry.event_catalogue())
    wrong = [pattern for pattern in events if not registry.is_valid_pattern(pattern, known)]
    if wrong:
        return [
            Problem(
                "events",
                f"Not a known event name or wildcard: {', '.join(map(repr, wrong))}. "
                f"Known events: {', '.join(sorted(known))}; wildcards: *, prefix.*.",
            )
        ]
    return []


def model_problems(models: Any) -> list[Problem]:
    if not _is_string_list(models):
        return [Problem("models", "Must be a list of watched model names.")]
    # "user" is the model of the user events.
    known = registry.watched_model_names() | {"user"}
    wrong = [name for name in models if name not in known]
    if wrong:
        return [
            Problem(
                "models",
                f"Not the name of a watched model: {', '.join(map(repr, wrong))}. "
                f"Watched model names: {', '.join(sorted(known))}.",
            )
        ]
    return []


def header_problems(headers: Any, signature_header: str = "") -> list[Problem]:
    """Custom headers: valid names, single-line values, none of ours."""
    if not isinstance(headers, dict):
        return [Problem("headers", "Must be a dict of header names to values.")]
    problems = []
    ours = (signature_header or str(app_settings.SIGNATURE_HEADER)).lower()
    for name, value in headers.items():
        if not isinstance(name, str) or not HEADER_NAME.match(name):
            problems.append(Problem("headers", f"{name!r} is not a valid header name."))
        elif name.lower() in PROTECTED_HEADERS:
            problems.append(
                Problem("headers", f"{name!r} cannot be set: django-webhooks sends it itself.")
            )
        elif name.lower() == ours:
            problems.append(Problem("headers", f"{name!r} is this webhook's signature header."))
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            problems.append(
                Problem("headers", f"The value of {name!r} must be text without CR or LF.")
            )
    return problems


def method_problems(method: Any) -> list[Problem]:
    if str(method).upper() not in METHODS:
        return [Problem("method", f"Must be one of {', '.join(METHODS)}.")]
    return []


def timeout_problems(timeout: Any) -> list[Problem]:
    if timeout is None:
        return []
    if not _is_number(timeout) or not 0 < timeout <= MAX_TIMEOUT:
        message = f"Must be a number of seconds greater than 0 and at most {MAX_TIMEOUT:g}."
        if _is_number(timeout) and timeout >= 1000:
            message += " Seconds, not milliseconds: 5 means five seconds."
        return [Problem("timeout", message)]
    return []


def retries_problems(retries: Any) -> list[Problem]:
    if retries is None:
        return []
    if not _is_whole(retries) or not 0 <= retries <= MAX_RETRIES:
        return [Problem("retries", f"Must be a whole number from 0 to {MAX_RETRIES}.")]
    return []


def max_in_flight_error(value: Any) -> str | None:
    """Requests in flight to one endpoint at once: a whole number from 1 to 10,000."""
    if value is None:
        return None
    if not _is_whole(value) or not 1 <= value <= MAX_IN_FLIGHT_LIMIT:
        return f"must be a whole number from 1 to {MAX_IN_FLIGHT_LIMIT:,}."
    return None


def rate_limit_error(value: Any) -> str | None:
    """Requests per second to one endpoint: a number above 0, at most 10,000 (0.5 = one
    request every two seconds)."""
    if value is None:
        return None
    if not _is_number(value) or not 0 < value <= RATE_LIMIT_MAX:
        return "must be a number of requests per second above 0 and at most 10,000."
    return None


def disable_after_seconds_problems(value: Any) -> list[Problem]:
    """A webhook's own failure period: 0 = never disable it; None = the site's setting."""
    if value is None:
        return []
    if not _is_whole(value) or not (
        value == 0 or DISABLE_AFTER_SECONDS_MIN <= value <= POLICY_VALUE_MAX
    ):
        return [
            Problem(
                "disable_after_seconds",
                "Must be 0 (never disable this webhook) or a whole number of seconds from "
                f"{DISABLE_AFTER_SECONDS_MIN} to {POLICY_VALUE_MAX:,}.",
            )
        ]
    return []


def disable_after_failures_problems(value: Any) -> list[Problem]:
    if value is None:
        return []
    if not _is_whole(value) or not 1 <= value <= POLICY_VALUE_MAX:
        return [
            Problem(
                "disable_after_failures", f"Must be a whole number from 1 to {POLICY_VALUE_MAX:,}."
            )
        ]
    return []


def signature_header_problems(name: Any) -> list[Problem]:
    if name in (None, ""):
        return []
    if not isinstance(name, str) or not HEADER_NAME.match(name):
        return [Problem("signature_header", f"{name!r} is not a valid HTTP header name.")]
    if name.lower() in PROTECTED_HEADERS:
        return [Problem("signature_header", f"{name!r} is a header django-webhooks sends itself.")]
    return []


def signature_prefix_problems(prefix: Any) -> list[Problem]:
    if prefix is None:
        return []
    if (
        not isinstance(prefix, str)
        or "\r" in prefix
        or "\n" in prefix
        or len(prefix) > SIGNATURE_PREFIX_MAX
    ):
        return [
            Problem(
                "signature_prefix",
                f"Must be text of at most {SIGNATURE_PREFIX_MAX} characters, without CR or LF.",
            )
        ]
    return []


def secret_problems(secret: Any) -> list[Problem]:
    if not isinstance(secret, str) or len(secret) < SECRET_MIN_LENGTH:
        return [
            Problem(
                "secret",
                f"Must be at least {SECRET_MIN_LENGTH} characters (a whsec_ secret is 46).",
            )
        ]
    if len(secret) > SECRET_MAX_LENGTH:
        return [Problem("secret", f"Must be at most {SECRET_MAX_LENGTH} characters.")]
    if any(ch.isspace() or not ch.isprintable() for ch in secret):
        return [Problem("secret", "Must not contain spaces or control characters.")]
    return []


def problems(
    values: Mapping[str, Any],
    *,
    resolve_names: bool = True,
    fields: Iterable[str] | None = None,
) -> list[Problem]:
    """Everything wrong with these field values (of the fields present, or of ``fields``)."""
    present = set(values) if fields is None else set(fields) & set(values)
    found: list[Problem] = []
    if "url" in present:
        found += url_problems(values["url"], resolve_names=resolve_names)
    if "events" in present:
        found += event_problems(values["events"])
    if "models" in present:
        found += model_problems(values["models"])
    if "headers" in present or "signature_header" in present:
        found += header_problems(values.get("headers") or {}, values.get("signature_header") or "")
    if "method" in present:
        found += method_problems(values["method"])
    if "timeout" in present:
        found += timeout_problems(values["timeout"])
    if "retries" in present:
        found += retries_problems(values["retries"])
    for name, rule in (("max_in_flight", max_in_flight_error), ("rate_limit", rate_limit_error)):
        if name in present:
            error = rule(values[name])
            if error:
                found.append(Problem(name, error[0].upper() + error[1:]))
    if "disable_after_seconds" in present:
        found += disable_after_seconds_problems(values["disable_after_seconds"])
    if "disable_after_failures" in present:
        found += disable_after_failures_problems(values["disable_after_failures"])
    if "signature_header" in present:
        found += signature_header_problems(values["signature_header"])
    if "signature_prefix" in present:
        found += signature_prefix_problems(values["signature_prefix"])
    if "secret" in present:
        found += secret_problems(values["secret"])
    return found


# Keys of a declared endpoint (WEBHOOKS["ENDPOINTS"]) that name a Webhook field of another name.
ENDPOINT_FIELDS = {"active": "is_active"}


def endpoint_problems(endpoint: Mapping[str, Any], ruled_fields: Iterable[str]) -> list[Problem]:
    """What is wrong with one declared endpoint, judged as its Webhook row would be (without
    DNS: settings are read at start-up). The checks report these (E007, E030), and the sync
    never writes an endpoint that has any."""
    values = {ENDPOINT_FIELDS.get(str(key), str(key)): value for key, value in endpoint.items()}
    values.setdefault("url", None)
    return problems(values, resolve_names=False, fields=ruled_fields)


def by_field(found: Iterable[Problem]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for problem in found:
        grouped.setdefault(problem.field, []).append(problem.message)
    return grouped


def _is_string_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value)
