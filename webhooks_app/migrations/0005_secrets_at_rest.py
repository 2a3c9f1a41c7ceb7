"""Webhook secrets encrypted at rest (webhooks_app/encryption.py): the columns become text
(a Fernet token is longer than the secret) and every existing secret is encrypted in place."""

from django.db import migrations

import webhooks_app.models
import webhooks_app.signing
from webhooks_app import encryption

COLUMNS = ("secret", "previous_secret")


def _rewrite(apps, schema_editor, convert):
    # Raw SQL on purpose: the model field would encrypt or decrypt on its own and hide which
    # form a row is in.
    webhook = apps.get_model("webhooks_app", "Webhook")
    table = schema_editor.quote_name(webhook._meta.db_table)
    quoted = [schema_editor.quote_name(column) for column in COLUMNS]
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"SELECT id, {', '.join(quoted)} FROM {table}")
        rows = cursor.fetchall()
        for pk, *values in rows:
            converted = [convert(value or "") for value in values]
            if converted != [value or "" for value in values]:
                assignments = ", ".join(f"{column} = %s" for column in quoted)
                cursor.execute(f"UPDATE {table} SET {assignments} WHERE id = %s", [*converted, pk])


def encrypt_secrets(apps, schema_editor):
    _rewrite(apps, schema_editor, encryption.reencrypt)


def decrypt_secrets(apps, schema_editor):
    _rewrite(apps, schema_editor, encryption.decrypt)


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks_app", "0004_engine_v2"),
    ]

    operations = [
        migrations.AlterField(
            model_name="webhook",
            name="previous_secret",
            field=webhooks_app.models.EncryptedSecretField(blank=True),
        ),
        migrations.AlterField(
            model_name="webhook",
            name="secret",
            field=webhooks_app.models.EncryptedSecretField(
                default=webhooks_app.signing.generate_secret
            ),
        ),
        migrations.RunPython(encrypt_secrets, decrypt_secrets),
    ]
