from django.apps import AppConfig
from django.core import checks
from django.db.models.signals import post_migrate


class WebhooksConfig(AppConfig):
    name = "webhooks_app"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Wiring only: no queries here (the database may not even exist yet).
        from webhooks_app import checks as webhook_checks
        from webhooks_app import signal_handlers
        from webhooks_app.maintenance import after_migrate

        checks.register(webhook_checks.check_settings, "webhooks")
        checks.register(webhook_checks.check_q_cluster, "webhooks")
        signal_handlers.wire()
        post_migrate.connect(after_migrate, sender=self, dispatch_uid="webhooks_app:post_migrate")
