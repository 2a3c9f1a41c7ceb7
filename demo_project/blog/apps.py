from django.apps import AppConfig


class BlogConfig(AppConfig):
    name = "demo_project.blog"
    label = "blog"
    verbose_name = "Blog"
