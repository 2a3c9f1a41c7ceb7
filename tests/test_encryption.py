"""Webhook secrets at rest: what the database holds is a Fernet token, never the secret."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.factories import ArticleFactory, WebhookFactory
from webhooks_app import encryption, operations, signing, tasks
from webhooks_app.models import Webhook

pytestmark = [pytest.mark.django_db, pytest.mark.portable]

SECRET = "whsec_" + "S3cr3tS1gningK3y" * 2
OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


def stored() -> list[tuple[int, str, str]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, secret, previous_secret FROM webhooks_app_webhook ORDER BY id")
        return [(pk, str(secret), str(previous)) for pk, secret, previous in cursor.fetchall()]


@pytest.fixture
def keys(settings):
    def use(*secret_keys: str) -> None:
        settings.WEBHOOKS = {**settings.WEBHOOKS, "SECRET_KEYS": list(secret_keys)}

    return use


def test_a_raw_sql_read_shows_no_secret_and_the_model_reads_it_back(receiver):
    hook = WebhookFactory(url=receiver.url, secret=SECRET)
    operations.rotate_secret(hook)

    rows = stored()
    hook.refresh_from_db()

    assert SECRET not in str(rows)
    assert hook.secret not in str(rows)
    assert all(value.startswith("fernet:") for _, *values in rows for value in values)
    assert hook.previous_secret == SECRET
    # And what the receiver gets is signed with the secret itself.
    ArticleFactory()
    tasks.run()
    request = receiver.requests[0]
    expected = signing.sign_standard(
        hook.secret, request.header("webhook-id"), request.header("webhook-timestamp"), request.body
    )
    assert expected.split()[0] in request.header("webhook-signature")


def test_the_same_secret_is_stored_differently_each_time():
    WebhookFactory(secret=SECRET)
    WebhookFactory(secret=SECRET)

    (_, first, _), (_, second, _) = stored()

    assert first != second


def test_a_new_key_in_front_reads_old_rows_and_reencrypting_lets_the_old_key_go(keys):
    keys(OLD_KEY)
    hook = WebhookFactory(secret=SECRET)
    before = stored()

    keys(NEW_KEY, OLD_KEY)
    assert Webhook.objects.get().secret == SECRET
    out = io.StringIO()
    call_command("webhooks_reencrypt", stdout=out)
    after = stored()
    keys(NEW_KEY)

    assert "Re-encrypted the secrets of 1 webhook." in out.getvalue()
    assert after != before
    assert Webhook.objects.get(pk=hook.pk).secret == SECRET
    keys(OLD_KEY)
    assert isinstance(Webhook.objects.get(pk=hook.pk).secret, encryption.UnreadableSecret)


def test_reencrypting_names_the_webhooks_no_key_decrypts(keys):
    keys(OLD_KEY)
    readable_later = WebhookFactory(secret=SECRET)
    keys(NEW_KEY)
    other = WebhookFactory(secret=SECRET)

    with pytest.raises(CommandError) as caught:
        call_command("webhooks_reencrypt", stdout=io.StringIO())

    assert caught.value.returncode == 1
    assert f"webhooks {readable_later.pk};" in str(caught.value)
    assert Webhook.objects.get(pk=other.pk).secret == SECRET


def test_without_secret_keys_the_key_comes_from_secret_key_and_its_fallbacks(keys, settings):
    keys()
    WebhookFactory(secret=SECRET)

    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = (
        "a-new-django-key",
        ["tests-only-not-secret"],
    )
    assert Webhook.objects.get().secret == SECRET
    settings.SECRET_KEY_FALLBACKS = []
    assert isinstance(Webhook.objects.get().secret, encryption.UnreadableSecret)


def test_a_secret_no_key_decrypts_fails_its_deliveries_visibly_and_stays_as_stored(keys, receiver):
    keys(OLD_KEY)
    hook = WebhookFactory(url=receiver.url, secret=SECRET)
    keys(NEW_KEY)
    healthy = WebhookFactory(url=receiver.url)
    hook = Webhook.objects.get(pk=hook.pk)  # loads; the fan-out and the admin still work
    (_, before, _), _ = stored()

    hook.name = "renamed"
    hook.save()  # writes the stored token back, not an empty or re-encrypted secret
    ArticleFactory()
    tasks.run()

    assert stored()[0][1] == before
    assert len(receiver.requests) == 1  # the healthy webhook, signed as usual
    row = hook.deliveries.get()
    assert row.status == "failed"
    assert row.last_error.startswith("Could not send: SecretUnreadable: the secret of webhook")
    assert healthy.deliveries.get().status == "succeeded"


@pytest.mark.django_db(transaction=True)
def test_the_migration_encrypts_existing_rows_and_its_reverse_decrypts_them():
    executor = MigrationExecutor(connection)
    executor.migrate([("webhooks_app", "0004_engine_v2")])
    try:
        old_state = executor.loader.project_state([("webhooks_app", "0004_engine_v2")])
        # The model as it was before 0005: its secret column holds clear text.
        old_state.apps.get_model("webhooks_app", "Webhook").objects.create(
            url="https://a.example.com/", secret=SECRET
        )
        assert stored()[0][1] == SECRET
        executor = MigrationExecutor(connection)
        executor.migrate([("webhooks_app", "0005_secrets_at_rest")])

        ((_, secret, _),) = stored()
        assert secret.startswith("fernet:")
        assert encryption.decrypt(secret) == SECRET

        executor = MigrationExecutor(connection)
        executor.migrate([("webhooks_app", "0004_engine_v2")])
        ((_, secret, _),) = stored()
        assert secret == SECRET
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes("webhooks_app"))
