"""Endpoints declared in ``WEBHOOKS["ENDPOINTS"]`` become Webhook rows, kept in sync.

Each declared endpoint is identified by its ``name`` (or its URL when unnamed). A row is only
rewritten when its declaration changed, so a webhook that was disabled at run time (a 410
from the receiver) stays disabled until its declaration changes or someone enables it. An
endpoint removed from settings is disabled, not deleted: its delivery history stays.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
from typing import Any

from django.db import DEFAULT_DB_ALIAS, IntegrityError, transaction
from django.utils import timezone

from webhooks_app import rules
from webhooks_app.conf import app_settings
from webhooks_app.models import DECLARED_INACTIVE_REASON, REMOVED_FROM_SETTINGS_REASON, Webhook

logger = logging.getLogger("webhooks_app.sync")

REMOVED_REASON = REMOVED_FROM_SETTINGS_REASON
_synced: dict[str, str] = {}
_lock = threading.Lock()


def endpoint_key(endpoint: dict[str, Any]) -> str:
    return str(endpoint.get("name") or endpoint.get("url") or "")


def _declaration(endpoint: dict[str, Any]) -> dict[str, Any]:
    """What is stored to show where a webhook came from; never the secret itself."""
    return {key: value for key, value in endpoint.items() if key != "secret"} | (
        {"secret": "(set in settings)"} if endpoint.get("secret") else {}
    )


def _fingerprint(endpoints: Any) -> str:
    text = json.dumps(endpoints, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _row_values(endpoint: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": str(endpoint.get("name") or ""),
        "url": endpoint["url"],
        "events": list(endpoint.get("events") or []),
        "models": list(endpoint.get("models") or []),
        "headers": dict(endpoint.get("headers") or {}),
        "method": str(endpoint.get("method") or "POST").upper(),
        "timeout": endpoint.get("timeout"),
        "retries": endpoint.get("retries"),
        "max_in_flight": endpoint.get("max_in_flight"),
        "rate_limit": endpoint.get("rate_limit"),
        "disable_after_seconds": endpoint.get("disable_after_seconds"),
        "disable_after_failures": endpoint.get("disable_after_failures"),
        "signature_header": str(endpoint.get("signature_header") or ""),
        "signature_prefix": endpoint.get("signature_prefix"),
        "is_active": bool(endpoint.get("active", True)),
        "settings_declaration": _declaration(endpoint),
    }
    if endpoint.get("secret"):
        values["secret"] = str(endpoint["secret"])
    if values["is_active"]:
        values["disabled_reason"] = ""
        values["disabled_at"] = None
    else:
        values["disabled_reason"] = DECLARED_INACTIVE_REASON
        values["disabled_at"] = timezone.now()
    return values


def sync_endpoints(using: str = DEFAULT_DB_ALIAS) -> None:
    """Make the managed Webhook rows match the declared endpoints."""
    endpoints = app_settings.ENDPOINTS
    if not isinstance(endpoints, (list, tuple)):
        return
    declared = [e for e in endpoints if isinstance(e, dict) and e.get("url")]
    keys = []
    with transaction.atomic(using=using):
        existing = {
            row.settings_key: row
            for row in Webhook.objects.using(using).filter(managed_by_settings=True)
        }
        for endpoint in declared:
            key = endpoint_key(endpoint)
            keys.append(key)
            found = rules.endpoint_problems(endpoint, Webhook.RULED_FIELDS)
            if found:
                # `manage.py check` reports it (E007, E030), but a web process runs no checks:
                # the row is neither made nor changed (an existing one keeps its last good
                # declaration) rather than written with a value the rules refuse.
                logger.error(
                    "WEBHOOKS['ENDPOINTS'] entry %r is not applied: %s",
                    key,
                    "; ".join(f"{problem.field}: {problem.message}" for problem in found),
                )
                continue
            row = existing.get(key)
            values = _row_values(endpoint)
            if row is None:
                Webhook.objects.using(using).create(
                    managed_by_settings=True, settings_key=key, **values
                )
            elif row.settings_declaration != values["settings_declaration"] or (
                endpoint.get("secret") and row.secret != endpoint["secret"]
            ):
                for attribute, value in values.items():
                    setattr(row, attribute, value)
                row.save(using=using)
        stale = [key for key in existing if key not in keys]
        Webhook.objects.using(using).filter(
            managed_by_settings=True, settings_key__in=stale, is_active=True
        ).update(is_active=False, disabled_reason=REMOVED_REASON, disabled_at=timezone.now())


def ensure_synced(using: str = DEFAULT_DB_ALIAS) -> None:
    """Sync once per process and declaration: a dictionary lookup after the first call."""
    fingerprint = _fingerprint(app_settings.ENDPOINTS)
    if _synced.get(using) == fingerprint:
        return
    with _lock:
        if _synced.get(using) == fingerprint:
            return
        # Another process may create the same rows at the same moment; theirs will do.
        with contextlib.suppress(IntegrityError):
            sync_endpoints(using)

        # Inside the caller's transaction the rows only exist once it commits.
        def remember() -> None:
            _synced[using] = fingerprint

        transaction.on_commit(remember, using=using)
