from django.apps import AppConfig
from django.core import checks
from django.db.models.signals import post_migrate


class WebhooksConfig(AppConfig):
    name = "webhooks_app"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Wiring only: no queries here (the database may not even exist yet).
        from django_q.signals import post_spawn

        from webhooks_app import checks as webhook_checks
        from webhooks_app import signal_handlers, tasks
        from webhooks_app.maintenance import after_migrate

        checks.register(webhook_checks.check_settings, "webhooks")
        checks.register(webhook_checks.check_q_cluster, "webhooks")
        checks.register(webhook_checks.check_admin_banner, "webhooks")
        signal_handlers.wire()
        post_migrate.connect(after_migrate, sender=self, dispatch_uid="webhooks_app:post_migrate")
        # A (re)started cluster starts the dispatcher at once instead of at the next schedule
        # tick, so rows a killed cluster left leased are recovered as soon as leases run out.
        post_spawn.connect(tasks.on_worker_spawn, dispatch_uid="webhooks_app:post_spawn")
