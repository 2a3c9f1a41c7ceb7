"""Prepare the demo after ``migrate``: an admin account and directions. Safe to run again."""

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

USERNAME = "admin"
PASSWORD = "admin"  # Demo only: the database lives in .demo/ on your machine.


class Command(BaseCommand):
    help = (
        "Create the demo superuser admin/admin if it does not exist, then print where to click. "
        "Run after 'manage.py migrate'; running it again changes nothing."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        if user_model._default_manager.filter(username=USERNAME).exists():
            self.stdout.write(f"Superuser '{USERNAME}' already exists.")
        else:
            user_model._default_manager.create_superuser(
                username=USERNAME, email="admin@example.com", password=PASSWORD
            )
            self.stdout.write(self.style.SUCCESS(f"Created superuser '{USERNAME}'."))

        base = settings.DEMO_BASE_URL
        self.stdout.write(
            "\n"
            f"  Admin:     {base}/admin/   (user {USERNAME}, password {PASSWORD}: demo only)\n"
            f"  Receiver:  {base}/receiver/\n"
            f"  Webhooks:  {base}/admin/webhooks_app/\n"
            "\n"
            f"  Add a Blog post ({base}/admin/blog/blogpost/add/), save,\n"
            f"  then open {base}/receiver/\n"
        )
