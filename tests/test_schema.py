"""The tables' indexes are the ones the models declare: every index costs each write of a
row, and the hot tables are written on every save (events) and several times per delivery.
Runs on SQLite and in the integration run on PostgreSQL (``portable``), where Django adds
indexes of its own."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from webhooks_app.models import Event

pytestmark = [pytest.mark.portable]


def index_names(table: str) -> set[str]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return {
        name
        for name, details in constraints.items()
        if details["index"] and not details["primary_key"] and not details["unique"]
    }


def declared(model: type[Event]) -> set[str]:
    return {index.name for index in model._meta.indexes if index.name}


@pytest.mark.django_db
def test_events_carry_only_their_declared_indexes():
    # On PostgreSQL Django would add a LIKE-ready copy of the text primary key's index,
    # which nothing uses and every save and fan-out writes.
    assert index_names(Event._meta.db_table) == declared(Event)


@pytest.mark.django_db(transaction=True)
def test_unapplying_the_migration_brings_back_what_django_made():
    table = Event._meta.db_table
    executor = MigrationExecutor(connection)
    executor.migrate([("webhooks_app", "0008_attempt_webhook")])
    try:
        before = index_names(table) - declared(Event)
        if connection.vendor == "postgresql":
            assert len(before) == 1
            assert next(iter(before)).endswith("_like")
        else:
            assert before == set()
        executor = MigrationExecutor(connection)
        executor.migrate([("webhooks_app", "0009_event_id_without_like_index")])
        # Less what later migrations add (0010: the fan-out batches' index).
        assert index_names(table) == declared(Event) - {"webhooks_event_batch_idx"}
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes("webhooks_app"))
    assert index_names(table) == declared(Event)
