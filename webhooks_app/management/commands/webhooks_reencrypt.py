"""Encrypt every webhook secret with the first key of WEBHOOKS["SECRET_KEYS"]."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from webhooks_app import operations
from webhooks_app.management.cli import EXIT_PROBLEM, WebhooksCommand


class Command(WebhooksCommand):
    help = """Encrypt every stored webhook secret (and every previous secret still in its
rotation grace period) with the first key of WEBHOOKS["SECRET_KEYS"].

Rotating the key: put a new key (Fernet.generate_key()) first in SECRET_KEYS and keep the
old one after it, deploy, run this command, then remove the old key.

  manage.py webhooks_reencrypt

Exit status: 0 when every secret was re-encrypted, 1 when some could not be decrypted by
any configured key (their ids are printed; they are left as they are)."""

    def add_arguments(self, parser: ArgumentParser) -> None:
        pass

    def handle(self, *args: Any, **options: Any) -> None:
        rewritten, unreadable = operations.reencrypt_secrets()
        noun = "webhook" if rewritten == 1 else "webhooks"
        self.stdout.write(f"Re-encrypted the secrets of {rewritten} {noun}.")
        if unreadable:
            ids = ", ".join(str(pk) for pk in unreadable)
            raise CommandError(
                f"no configured key decrypts the secrets of webhooks {ids}; add the key they "
                "were encrypted with to WEBHOOKS['SECRET_KEYS']",
                returncode=EXIT_PROBLEM,
            )
