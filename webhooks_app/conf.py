"""Settings, read from ``settings.WEBHOOKS`` at access time.

Every property reads the host's settings when it is accessed, never at import, so
``override_settings(WEBHOOKS=...)`` works in tests and a bad value is reported by a system
check (``checks.py``) instead of crashing the import. Properties return the raw value with its
default applied; ``checks.py`` decides whether the value is valid, and code that runs after the
checks passed may rely on it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "ENABLED": True,
    "MODELS": {},
    "ENDPOINTS": [],
    "EVENTS": {},
    "USER_EVENTS": [],
    "USER_SERIALIZER": None,
    "TIMEOUT": 5.0,
    "RETRIES": 3,
    "RETRY_SCHEDULE": {"initial": 60, "factor": 5, "max": 21600},
    "RETRY_JITTER": 0.2,
    "RETRY_AFTER_MAX": 3600,
    "SIGNATURE_HEADER": "X-Webhook-Signature",
    "SIGNATURE_PREFIX": "",
    "RESPONSE_BODY_LIMIT": 16384,
    "DEBUG": False,
    "QUEUE": None,
    "BATCH_SIZE": 200,
    "LEASE_SECONDS": 45,
    "DISPATCH_INTERVAL": 1.0,
    "TASK_SECONDS": 5.0,
    "MAX_IN_FLIGHT": 200,
    "ENDPOINT_MAX_IN_FLIGHT": 50,
    "RETRY_SHARE": 0.5,
    "SUBSCRIPTION_CACHE_SECONDS": 1.0,
    # REST API (webhooks_app.api)
    "API_OWNER_SCOPED": False,
    "ALLOW_HTTP": False,
    "ALLOWED_TARGETS": [],
    "TEST_THROTTLE_RATE": "10/min",
    # The failure policy (failures.py): disable a webhook that has failed continuously for
    # this long (None = never) and at least this many attempts in a row; warn its owner
    # after this share of the period; tell "owner" and/or "admins", or call NOTIFIER.
    "DISABLE_AFTER_SECONDS": 5 * 86400,
    "DISABLE_AFTER_FAILURES": 5,
    "DISABLE_WARNING_SHARE": 0.5,
    "NOTIFY": ["owner", "admins"],
    "NOTIFIER": None,
    # Secrets at rest (encryption.py): Fernet keys, the first encrypts; empty = derived
    # from SECRET_KEY.
    "SECRET_KEYS": [],
}

# Field names that never go into a payload unless a model's "fields" names them explicitly:
# a User-like model must not leak its password hash because nobody thought to exclude it.
SENSITIVE_FIELD_MARKERS = ("password", "secret", "token", "api_key", "apikey", "private_key")


class WebhooksSettings:
    """Typed access to ``settings.WEBHOOKS`` with defaults; see the README's settings table."""

    def _get(self, name: str) -> Any:
        user_settings = getattr(settings, "WEBHOOKS", None) or {}
        if not isinstance(user_settings, dict):
            user_settings = {}
        return user_settings.get(name, DEFAULTS[name])

    @property
    def user_settings(self) -> Any:
        return getattr(settings, "WEBHOOKS", None)

    @property
    def ENABLED(self) -> bool:
        return bool(self._get("ENABLED"))

    @property
    def MODELS(self) -> Any:
        """``{"app_label.Model": {options}}``; a list of labels is accepted as a shorthand."""
        models = self._get("MODELS")
        if isinstance(models, (list, tuple)):
            return {label: {} for label in models}
        return models

    @property
    def ENDPOINTS(self) -> Any:
        return self._get("ENDPOINTS")

    @property
    def EVENTS(self) -> Any:
        """Custom event names this site emits, ``{"name": "description"}``."""
        events = self._get("EVENTS")
        if isinstance(events, (list, tuple)):
            return {name: "" for name in events}
        return events

    @property
    def USER_EVENTS(self) -> Any:
        return self._get("USER_EVENTS")

    @property
    def USER_SERIALIZER(self) -> Any:
        return self._get("USER_SERIALIZER")

    @property
    def TIMEOUT(self) -> Any:
        return self._get("TIMEOUT")

    @property
    def RETRIES(self) -> Any:
        return self._get("RETRIES")

    @property
    def RETRY_SCHEDULE(self) -> Any:
        return self._get("RETRY_SCHEDULE")

    @property
    def RETRY_JITTER(self) -> Any:
        return self._get("RETRY_JITTER")

    @property
    def RETRY_AFTER_MAX(self) -> Any:
        return self._get("RETRY_AFTER_MAX")

    @property
    def SIGNATURE_HEADER(self) -> Any:
        return self._get("SIGNATURE_HEADER")

    @property
    def SIGNATURE_PREFIX(self) -> Any:
        return self._get("SIGNATURE_PREFIX")

    @property
    def RESPONSE_BODY_LIMIT(self) -> Any:
        return self._get("RESPONSE_BODY_LIMIT")

    @property
    def DEBUG(self) -> bool:
        return bool(self._get("DEBUG"))

    @property
    def QUEUE(self) -> Any:
        """The django-q2 cluster name our tasks go to; ``None`` is the default cluster."""
        return self._get("QUEUE")

    @property
    def BATCH_SIZE(self) -> Any:
        return self._get("BATCH_SIZE")

    @property
    def LEASE_SECONDS(self) -> Any:
        return self._get("LEASE_SECONDS")

    @property
    def DISPATCH_INTERVAL(self) -> Any:
        return self._get("DISPATCH_INTERVAL")

    @property
    def TASK_SECONDS(self) -> Any:
        """How long one delivery task keeps claiming new work before it hands over."""
        return self._get("TASK_SECONDS")

    @property
    def MAX_IN_FLIGHT(self) -> Any:
        """Requests one worker process keeps in flight at once."""
        return self._get("MAX_IN_FLIGHT")

    @property
    def ENDPOINT_MAX_IN_FLIGHT(self) -> Any:
        """Requests in flight to one endpoint across all workers, unless the webhook says."""
        return self._get("ENDPOINT_MAX_IN_FLIGHT")

    @property
    def RETRY_SHARE(self) -> Any:
        """The largest share of a worker's and an endpoint's slots that retries may take."""
        return self._get("RETRY_SHARE")

    @property
    def SUBSCRIPTION_CACHE_SECONDS(self) -> Any:
        """How long a process trusts its copy of who subscribed to what."""
        return self._get("SUBSCRIPTION_CACHE_SECONDS")

    @property
    def API_OWNER_SCOPED(self) -> bool:
        """Ordinary authenticated users may manage their own webhooks through the API."""
        return bool(self._get("API_OWNER_SCOPED"))

    @property
    def ALLOW_HTTP(self) -> bool:
        """Accept plain ``http://`` URLs for webhooks created or changed through the API."""
        return bool(self._get("ALLOW_HTTP"))

    @property
    def ALLOWED_TARGETS(self) -> Any:
        """Host names and IP networks the API accepts although they are private or loopback."""
        return self._get("ALLOWED_TARGETS")

    @property
    def TEST_THROTTLE_RATE(self) -> Any:
        """DRF rate (``"10/min"``) of the API's test sends per user; ``None`` = unthrottled."""
        return self._get("TEST_THROTTLE_RATE")

    @property
    def DISABLE_AFTER_SECONDS(self) -> Any:
        return self._get("DISABLE_AFTER_SECONDS")

    @property
    def DISABLE_AFTER_FAILURES(self) -> Any:
        return self._get("DISABLE_AFTER_FAILURES")

    @property
    def DISABLE_WARNING_SHARE(self) -> Any:
        return self._get("DISABLE_WARNING_SHARE")

    @property
    def NOTIFY(self) -> Any:
        return self._get("NOTIFY")

    @property
    def NOTIFIER(self) -> Any:
        return self._get("NOTIFIER")

    @property
    def SECRET_KEYS(self) -> Any:
        return self._get("SECRET_KEYS")


app_settings = WebhooksSettings()
