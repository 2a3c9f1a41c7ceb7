from django.apps import AppConfig


class ReceiverConfig(AppConfig):
    name = "demo_project.receiver"
    label = "receiver"
    verbose_name = "Demo receiver"
