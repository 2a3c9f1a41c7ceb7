"""Endpoints declared in settings become Webhook rows and stay in sync with settings."""

import pytest
from django.db import transaction
from django.utils import timezone

from tests.factories import ArticleFactory
from webhooks_app import claims, sync
from webhooks_app.maintenance import after_migrate
from webhooks_app.models import Delivery, Event, Webhook

pytestmark = [pytest.mark.django_db, pytest.mark.portable]

DECLARED = {
    "name": "search-index",
    "url": "https://search.example.com/hook",
    "events": ["create", "update"],
    "models": ["article"],
    "secret": "test-secret-of-20-chars",
    "headers": {"X-Custom-Header": "value"},
    "timeout": 2.5,
    "retries": 5,
    "method": "PUT",
    "signature_header": "X-Scalar-Signature",
    "signature_prefix": "sha256=",
}


@pytest.fixture
def declare(settings):
    def apply(*endpoints):
        settings.WEBHOOKS = {**settings.WEBHOOKS, "ENDPOINTS": list(endpoints)}
        sync.sync_endpoints()

    return apply


def test_declared_endpoint_becomes_a_managed_webhook(declare):
    declare(DECLARED)

    webhook = Webhook.objects.get()
    assert webhook.managed_by_settings
    assert webhook.settings_key == "search-index"
    assert webhook.url == DECLARED["url"]
    assert webhook.events == ["create", "update"]
    assert webhook.models == ["article"]
    assert webhook.secret == "test-secret-of-20-chars"
    assert webhook.headers == {"X-Custom-Header": "value"}
    assert webhook.effective_timeout == 2.5
    assert webhook.effective_retries == 5
    assert webhook.method == "PUT"
    assert webhook.effective_signature_header == "X-Scalar-Signature"
    assert webhook.effective_signature_prefix == "sha256="
    assert webhook.settings_declaration["secret"] == "(set in settings)"
    assert "test-secret-of-20-chars" not in str(webhook.settings_declaration)


def test_a_declared_endpoint_sets_its_own_failure_policy(declare, settings):
    settings.WEBHOOKS = {
        **settings.WEBHOOKS,
        "DISABLE_AFTER_SECONDS": 5 * 86400,
        "DISABLE_AFTER_FAILURES": 5,
    }
    declare({**DECLARED, "disable_after_seconds": 3600, "disable_after_failures": 2})

    webhook = Webhook.objects.get()
    assert (webhook.disable_after_seconds, webhook.disable_after_failures) == (3600, 2)
    assert webhook.effective_disable_after_seconds == 3600
    assert webhook.effective_disable_after_failures == 2

    declare({**DECLARED, "disable_after_seconds": 0})  # never; failures back to the default

    webhook.refresh_from_db()
    assert (webhook.disable_after_seconds, webhook.disable_after_failures) == (0, None)
    assert webhook.effective_disable_after_seconds is None
    assert webhook.effective_disable_after_failures == 5


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"disable_after_seconds": True}, "disable_after_seconds: Must be 0"),
        ({"disable_after_seconds": "5d"}, "disable_after_seconds: Must be 0"),
        ({"disable_after_failures": -5}, "disable_after_failures: Must be a whole number"),
        ({"retries": "3"}, "retries: Must be a whole number"),
        ({"url": "https://10.0.0.7/hook"}, "url: "),
    ],
)
def test_an_endpoint_the_rules_refuse_is_not_written_and_the_others_are(
    declare, caplog, bad, words
):
    # A web process runs no system checks: the sync itself must not write what E007 refuses.
    declare(DECLARED)
    other = {"name": "other", "url": "https://other.example.com/hook"}

    declare({**DECLARED, "events": ["delete"], **bad}, other)

    kept = Webhook.objects.get(settings_key="search-index")
    assert kept.events == ["create", "update"]  # its last good declaration
    assert kept.disable_after_seconds is None
    assert kept.is_active
    assert Webhook.objects.filter(settings_key="other", is_active=True).exists()
    assert "WEBHOOKS['ENDPOINTS'] entry 'search-index' is not applied" in caplog.text
    assert words in caplog.text


def test_unnamed_endpoint_is_keyed_by_url_and_gets_a_secret(declare):
    declare({"url": "https://a.example.com/hook"})

    webhook = Webhook.objects.get()
    assert webhook.settings_key == "https://a.example.com/hook"
    assert webhook.secret.startswith("whsec_")
    assert webhook.effective_timeout == 5.0
    assert webhook.effective_retries == 3


def test_changed_declaration_updates_the_row(declare):
    declare(DECLARED)
    declare({**DECLARED, "events": ["delete"]})

    assert Webhook.objects.get().events == ["delete"]


def test_removed_endpoint_is_disabled_not_deleted(declare):
    declare(DECLARED, {"url": "https://b.example.com/hook"})
    declare({"url": "https://b.example.com/hook"})

    removed = Webhook.objects.get(settings_key="search-index")
    assert removed.is_active is False
    assert removed.disabled_reason == sync.REMOVED_REASON


def test_runtime_disable_survives_an_unchanged_declaration(declare):
    declare(DECLARED)
    Webhook.objects.update(is_active=False, disabled_reason="410 Gone")
    declare(DECLARED)

    assert Webhook.objects.get().is_active is False
    declare({**DECLARED, "url": "https://search.example.com/v2/hook"})
    assert Webhook.objects.get().is_active is True


def test_sync_runs_after_migrate(settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "ENDPOINTS": [DECLARED]}
    after_migrate(using="default")

    assert Webhook.objects.filter(managed_by_settings=True).count() == 1


def test_first_event_syncs_endpoints_lazily(settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "ENDPOINTS": [DECLARED]}
    ArticleFactory()

    assert Webhook.objects.get().settings_key == "search-index"
    assert Event.objects.get().pending_fanout is True
    with transaction.atomic():
        claims.fan_out(timezone.now(), limit=10, using="default")
    assert Delivery.objects.get().webhook.settings_key == "search-index"
