"""Fixtures for the API tests, loaded with ``pytest_plugins = ["tests.api_support"]``.

Nothing here is autouse: a test module opts in with ``usefixtures("api_settings")``.
DNS is faked for every API test: names under ``.internal`` resolve to 10.0.0.5,
``metadata.test`` to 169.254.169.254, ``v6.test`` to a unique-local IPv6 address and every
other name to a public documentation address, so no test ever asks a real resolver.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import cache
from rest_framework.test import APIClient

from tests.factories import UserFactory, WebhookFactory
from tests.fake_dns import fake_resolve

RESEND_PERMS = [
    "test_webhook",
    "recover_webhook",
    "rotate_webhook_secret",
    "retry_delivery",
    "add_webhook",
    "change_webhook",
    "delete_webhook",
]


@pytest.fixture
def api_settings(settings, monkeypatch, db):
    """The suite's receiver is http://127.0.0.1: allow exactly that, and fake DNS."""
    settings.WEBHOOKS = {
        **settings.WEBHOOKS,
        "ALLOW_HTTP": True,
        "ALLOWED_TARGETS": ["127.0.0.1"],
        "TEST_THROTTLE_RATE": "100/min",
    }
    # The users these tests make need no real password hashing.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    monkeypatch.setattr("webhooks_app.targets.resolve", fake_resolve)
    cache.clear()  # the throttle's counts
    yield settings
    cache.clear()


def _client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def client_for():
    """``client_for(user)``: an APIClient authenticated as ``user`` (None = anonymous)."""
    return _client_for


@pytest.fixture
def staff(db):
    user = UserFactory(is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="webhooks_app", codename__in=RESEND_PERMS)
    )
    return user


@pytest.fixture
def staff_without_perms(db):
    return UserFactory(is_staff=True)


@pytest.fixture
def owner(db):
    return UserFactory()


@pytest.fixture
def other_owner(db):
    return UserFactory()


@pytest.fixture
def staff_client(staff):
    return _client_for(staff)


@pytest.fixture
def owner_scoped(api_settings):
    api_settings.WEBHOOKS = {**api_settings.WEBHOOKS, "API_OWNER_SCOPED": True}
    return api_settings


@pytest.fixture
def hook(receiver, owner):
    """A webhook of ``owner`` that points at the suite's receiver."""
    return WebhookFactory(url=receiver.url, owner=owner)
