"""Who may use the API, and what for.

Staff manage every webhook; with ``WEBHOOKS["API_OWNER_SCOPED"]`` ordinary authenticated users
manage their own (the views filter querysets by owner, so another owner's objects are 404, not
403). Resending, and creating, changing or deleting a webhook, are rights of their own: staff
need the model permission for each.
"""

from __future__ import annotations

from typing import Any

from rest_framework import permissions
from rest_framework.request import Request
from rest_framework.views import APIView

from webhooks_app.conf import app_settings
from webhooks_app.models import Webhook

# The view action that resends something -> the permission staff need for it.
ACTION_PERMISSIONS = {
    "send_test": "webhooks_app.test_webhook",
    "recover": "webhooks_app.recover_webhook",
    "rotate_secret": "webhooks_app.rotate_webhook_secret",
    "retry": "webhooks_app.retry_delivery",
}
# Changing which URL receives signed payloads is as sensitive as resending: staff need
# Django's add/change/delete permission for it, as the admin asks.
WRITE_PERMISSIONS = {
    "create": "webhooks_app.add_webhook",
    "update": "webhooks_app.change_webhook",
    "partial_update": "webhooks_app.change_webhook",
    "destroy": "webhooks_app.delete_webhook",
    "enable": "webhooks_app.change_webhook",
}
# Actions that change a webhook itself; settings-declared webhooks refuse them.
# (Enabling is not among them: a settings endpoint disabled by a 410 or the failure policy
# is enabled again like any other; operations.enable refuses what only settings can undo.)
WRITE_ACTIONS = frozenset({"update", "partial_update", "destroy", "rotate_secret"})


def is_manager(user: Any) -> bool:
    """Sees and manages every webhook (as opposed to only the ones they own)."""
    return bool(user and user.is_authenticated and user.is_staff)


class CanUseWebhooksAPI(permissions.BasePermission):
    """Staff always; other authenticated users only when the API is owner-scoped."""

    message = "Only staff users may use the webhooks API."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if not is_manager(user) and not app_settings.API_OWNER_SCOPED:
            return False
        action = getattr(view, "action", None)
        perm = ACTION_PERMISSIONS.get(action or "") or WRITE_PERMISSIONS.get(action or "")
        # Owners may resend to their own webhooks; staff need the model permission
        # (superusers have them all).
        if perm and is_manager(user) and not user.has_perm(perm):
            self.message = f"You do not have the '{perm}' permission."
            return False
        return True


class SettingsEndpointsReadOnly(permissions.BasePermission):
    """Webhooks declared in ``WEBHOOKS["ENDPOINTS"]`` are changed in settings, not here."""

    message = (
        "This webhook is declared in settings.WEBHOOKS['ENDPOINTS'] and is read-only through "
        "the API; change it in the settings."
    )

    def has_object_permission(self, request: Request, view: APIView, obj: Any) -> bool:
        if not isinstance(obj, Webhook) or not obj.managed_by_settings:
            return True
        return getattr(view, "action", None) not in WRITE_ACTIONS
