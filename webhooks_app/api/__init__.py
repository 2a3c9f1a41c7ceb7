"""The REST API (Django REST framework): include ``webhooks_app.api.urls`` to serve it."""
