"""The operator's admin: webhooks, deliveries, events and a health page.

Every button and action calls ``webhooks_app.operations``, the same functions the API and the
management commands call. Resending is guarded by its own permission (``test_webhook``,
``recover_webhook``, ``rotate_webhook_secret``, ``retry_delivery``): a staff user with only
the view permissions can inspect everything and resend nothing.
"""

from webhooks_app.admin import deliveries, events, health, webhooks

__all__ = ["deliveries", "events", "health", "webhooks"]
