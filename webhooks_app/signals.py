"""Signals this app sends, for projects that want to react (e.g. page someone, open a ticket).

Both are sent after the change committed, from the worker that made it; notifications.py
sends its e-mails (or calls ``WEBHOOKS["NOTIFIER"]``) right after them.
"""

from django.dispatch import Signal

# A webhook was disabled automatically: it answered 410 Gone, or failed for as long as the
# failure policy allows (failures.py). With ``webhook`` and ``reason``.
webhook_disabled = Signal()
# A webhook has been failing for DISABLE_WARNING_SHARE of its disable period and will be
# disabled unless an attempt succeeds. With ``webhook``, ``failing_since`` and ``disable_at``.
webhook_failing = Signal()
