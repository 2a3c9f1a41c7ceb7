"""PostgreSQL: the event id's second index goes.

Django gives a text primary key on PostgreSQL a second btree, with ``varchar_pattern_ops``,
for ``LIKE 'prefix%'`` lookups. Nothing looks events up that way (the admin, the API and the
workers match ids exactly, which the primary key answers), and an event row is written twice
on the hot path: by the writer's save (one more index entry per event) and when a worker
fans it out (the flag it clears is in an index predicate, so that UPDATE cannot be HOT and
enters every index again, inside the claim lock). Other databases have no such index.
"""

from django.db import migrations


def _like_indexes(schema_editor, table, column):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return [
        name
        for name, details in constraints.items()
        if details["index"]
        and not details["primary_key"]
        and details["columns"] == [column]
        and name.endswith("_like")
    ]


def drop_like_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    event = apps.get_model("webhooks_app", "Event")
    table, column = event._meta.db_table, event._meta.get_field("id").column
    for name in _like_indexes(schema_editor, table, column):
        schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")


def create_like_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    event = apps.get_model("webhooks_app", "Event")
    table, column = event._meta.db_table, event._meta.get_field("id").column
    if _like_indexes(schema_editor, table, column):
        return
    # The index exactly as Django makes it for this field (same name, same operator class).
    schema_editor.execute(
        schema_editor._create_like_index_sql(event, event._meta.get_field("id"))
    )


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks_app", "0008_attempt_webhook"),
    ]

    operations = [
        migrations.RunPython(drop_like_index, create_like_index, elidable=False),
    ]
