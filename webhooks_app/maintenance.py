"""What runs after ``migrate``: settings endpoints synced, the dispatcher's schedule in place."""

from __future__ import annotations

from typing import Any

from webhooks_app import sync, tasks


def after_migrate(using: str, **kwargs: Any) -> None:
    sync.sync_endpoints(using=using)
    tasks.ensure_schedule()
