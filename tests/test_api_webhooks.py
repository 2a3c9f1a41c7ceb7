"""Webhooks through the API: CRUD, the secret shown once, settings-declared rows read-only."""

import datetime

import pytest

from tests.factories import WebhookFactory
from webhooks_app import signing, sync
from webhooks_app.models import HeldFanout, Webhook

pytest_plugins = ["tests.api_support"]
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_settings")]

URL = "/api/webhooks/"


@pytest.fixture
def declared(api_settings):
    api_settings.WEBHOOKS = {
        **api_settings.WEBHOOKS,
        "ENDPOINTS": [
            {"name": "declared", "url": "https://hooks.example.com/d", "secret": "s" * 24}
        ],
    }
    sync.sync_endpoints()
    return Webhook.objects.get(managed_by_settings=True)


def test_create_generates_a_secret_and_returns_it_once(staff_client, staff):
    response = staff_client.post(
        URL,
        {"name": "CRM", "url": "https://crm.example.com/hook", "events": ["create", "update"]},
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    webhook = Webhook.objects.get(pk=body["id"])
    assert body["secret"] == webhook.secret
    assert body["secret"].startswith("whsec_")
    assert body["url"] == "https://crm.example.com/hook"
    assert body["events"] == ["create", "update"]
    assert body["is_active"] is True
    assert body["created_at"]
    assert webhook.owner == staff
    # Every later read shows it masked.
    again = staff_client.get(f"{URL}{webhook.pk}/").json()
    assert again["secret"] == signing.mask_secret(webhook.secret)
    assert webhook.secret not in str(staff_client.get(URL).json())


def test_create_keeps_a_given_secret(staff_client):
    secret = "whsec_" + "A" * 40
    response = staff_client.post(
        URL, {"url": "https://a.example.com/", "secret": secret}, format="json"
    )

    assert response.status_code == 201
    assert response.json()["secret"] == secret
    assert Webhook.objects.get().secret == secret


def test_list_is_paginated_and_masks_secrets(staff_client):
    hooks = WebhookFactory.create_batch(3)

    body = staff_client.get(URL).json()

    assert body["count"] == 3
    assert {row["id"] for row in body["results"]} == {h.pk for h in hooks}
    for row, hook in zip(body["results"], sorted(hooks, key=lambda h: -h.pk), strict=True):
        assert row["secret"] == signing.mask_secret(hook.secret)
        assert hook.secret not in str(body)


def test_a_held_back_webhook_says_since_when_in_one_query_per_page(
    staff_client, django_assert_num_queries
):
    held, free = WebhookFactory.create_batch(2)
    since = datetime.datetime(2026, 12, 7, 9, 30, tzinfo=datetime.UTC)
    HeldFanout.objects.create(webhook=held, from_batch=7, held_at=since)

    # The count and the page (the hold joined): none per webhook.
    with django_assert_num_queries(2):
        body = staff_client.get(URL).json()

    shown = {row["id"]: row["held_back_since"] for row in body["results"]}
    assert shown == {held.pk: "2026-12-07T09:30:00Z", free.pk: None}
    assert staff_client.get(f"{URL}{free.pk}/").json()["held_back_since"] is None
    patched = staff_client.patch(f"{URL}{held.pk}/", {"name": "renamed"}, format="json")
    assert patched.json()["held_back_since"] == "2026-12-07T09:30:00Z"


def test_retrieve_update_partial_update_and_delete(staff_client):
    hook = WebhookFactory(url="https://old.example.com/")
    detail = f"{URL}{hook.pk}/"

    assert staff_client.get(detail).json()["url"] == "https://old.example.com/"
    put = staff_client.put(
        detail,
        {"url": "https://new.example.com/", "events": ["*"], "method": "PUT", "timeout": 2.5},
        format="json",
    )
    assert put.status_code == 200, put.json()
    patch = staff_client.patch(detail, {"is_active": False, "retries": 0}, format="json")
    assert patch.status_code == 200, patch.json()
    hook.refresh_from_db()
    assert (hook.url, hook.events, hook.method, hook.timeout) == (
        "https://new.example.com/",
        ["*"],
        "PUT",
        2.5,
    )
    assert (hook.is_active, hook.retries) == (False, 0)
    assert patch.json()["secret"] == signing.mask_secret(hook.secret)

    assert staff_client.delete(detail).status_code == 204
    assert not Webhook.objects.exists()


def test_missing_webhook_is_404(staff_client):
    assert staff_client.get(f"{URL}999/").status_code == 404
    assert staff_client.patch(f"{URL}999/", {}, format="json").status_code == 404


def test_read_only_fields_cannot_be_set(staff_client, owner):
    response = staff_client.post(
        URL,
        {"url": "https://a.example.com/", "owner": owner.pk, "disabled_reason": "x"},
        format="json",
    )

    assert response.status_code == 201
    hook = Webhook.objects.get()
    assert hook.owner != owner
    assert hook.disabled_reason == ""


def test_settings_declared_webhooks_are_read_only(staff_client, declared):
    detail = f"{URL}{declared.pk}/"

    assert staff_client.get(detail).status_code == 200
    for response in (
        staff_client.patch(detail, {"name": "x"}, format="json"),
        staff_client.put(detail, {"url": "https://x.example.com/"}, format="json"),
        staff_client.delete(detail),
        staff_client.post(f"{detail}rotate-secret/", {}, format="json"),
    ):
        assert response.status_code == 403
        assert "settings.WEBHOOKS['ENDPOINTS']" in response.json()["detail"]
    declared.refresh_from_db()
    assert declared.name == "declared"


def test_owner_scoped_user_creates_and_sees_only_their_own(
    owner_scoped, owner, other_owner, client_for
):
    theirs = WebhookFactory(owner=other_owner)
    client = client_for(owner)

    created = client.post(URL, {"url": "https://mine.example.com/"}, format="json")

    assert created.status_code == 201
    assert Webhook.objects.get(pk=created.json()["id"]).owner == owner
    assert [row["id"] for row in client.get(URL).json()["results"]] == [created.json()["id"]]
    assert client.get(f"{URL}{theirs.pk}/").status_code == 404
    assert client.delete(f"{URL}{theirs.pk}/").status_code == 404
    assert Webhook.objects.filter(pk=theirs.pk).exists()


def test_header_credentials_are_redacted_on_read_and_kept_on_write_back(staff_client, webhook):
    webhook.headers = {"Authorization": "Bearer s3cr3t", "X-Tenant": "acme"}
    webhook.save()

    listed = staff_client.get("/api/webhooks/").json()
    shown = next(item for item in listed["results"] if item["id"] == webhook.pk)["headers"]
    assert shown == {"Authorization": "[redacted]", "X-Tenant": "acme"}
    assert "s3cr3t" not in str(listed)

    response = staff_client.patch(
        f"/api/webhooks/{webhook.pk}/", {"headers": {**shown, "X-Tenant": "acme2"}}, format="json"
    )
    assert response.status_code == 200, response.json()
    webhook.refresh_from_db()
    assert webhook.headers == {"Authorization": "Bearer s3cr3t", "X-Tenant": "acme2"}
