"""Signals this app sends, for projects that want to react (e.g. e-mail a webhook's owner)."""

from django.dispatch import Signal

# Sent after a webhook was disabled automatically (410 Gone), with ``webhook`` and ``reason``.
webhook_disabled = Signal()
