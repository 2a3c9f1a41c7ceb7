"""The admin pages operators use to see what was sent open and show it."""

import pytest
from django.urls import reverse

from tests.factories import ArticleFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def delivered(webhook, receiver, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        ArticleFactory(title="Seen in the admin")
    receiver.wait_for(1)


@pytest.mark.parametrize("model", ["webhook", "delivery", "event"])
def test_changelists_open(admin_client, delivered, model):
    response = admin_client.get(reverse(f"admin:webhooks_app_{model}_changelist"))

    assert response.status_code == 200


def test_delivery_page_shows_its_attempts_without_secrets(admin_client, delivered, webhook):
    from webhooks_app.models import Delivery

    row = Delivery.objects.get()
    response = admin_client.get(reverse("admin:webhooks_app_delivery_change", args=[row.pk]))

    content = response.content.decode()
    assert response.status_code == 200
    assert "webhook-signature" in content
    assert webhook.secret not in content


def test_webhook_page_never_shows_the_secret(admin_client, webhook):
    response = admin_client.get(reverse("admin:webhooks_app_webhook_change", args=[webhook.pk]))

    assert response.status_code == 200
    assert webhook.secret not in response.content.decode()
