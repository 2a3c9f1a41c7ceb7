"""The events of a transaction: written together, never lost, never kept from a rollback.

These commit for real (``transaction=True``), on SQLite here and on PostgreSQL in the
integration run (``portable``).
"""

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from tests.factories import WebhookFactory
from tests.models import Article
from webhooks_app import outbox
from webhooks_app.models import Event

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.portable]


@pytest.fixture(autouse=True)
def subscribed(db):
    WebhookFactory(events=["create", "update"])


def titles() -> list[str]:
    return sorted(
        Event.objects.filter(name="create").values_list("object_id", flat=True).distinct()
    )


def watching() -> bool:
    """Whether this connection still carries the outbox's hooks."""
    return any(name in connection.__dict__ for name in ("commit", "rollback", "close")) or bool(
        connection.execute_wrappers
    )


def event_inserts(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if 'INTO "webhooks_app_event"' in q["sql"]]


def test_a_transactions_events_go_in_together_before_it_commits():
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        articles = [Article.objects.create(title=f"t{i}") for i in range(300)]

    assert Event.objects.filter(name="create").count() == 300
    # One COPY on PostgreSQL (not in Django's query log), one INSERT per 100 rows on SQLite.
    assert len(event_inserts(queries)) <= 3
    assert set(Event.objects.values_list("object_id", flat=True)) == {
        str(article.pk) for article in articles
    }
    assert not watching()


def test_in_autocommit_each_event_is_written_with_its_save():
    with CaptureQueriesContext(connection) as queries:
        Article.objects.create(title="alone")
        assert Event.objects.count() == 1

    assert len(event_inserts(queries)) == 1
    assert not watching()


def test_in_autocommit_the_event_goes_through_djangos_cursor_made_once(monkeypatch):
    """The Event's statement runs on a cursor kept for the connection (one cursor fewer per
    save), still Django's own: execute wrappers (and so instrumentation) see it."""
    monkeypatch.setattr("webhooks_app.tasks.wake", lambda **kwargs: None)  # no engine run
    Article.objects.create(title="first")  # the subscriptions are read, the cursor made
    made: list[object] = []
    make_cursor = connection.make_cursor
    monkeypatch.setattr(connection, "make_cursor", lambda raw: made.append(raw) or make_cursor(raw))
    seen: list[str] = []

    def spy(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    assert not connection.queries_logged
    with connection.execute_wrapper(spy):
        for i in range(3):
            Article.objects.create(title=f"wrapped {i}")

    assert len([sql for sql in seen if 'INTO "webhooks_app_event"' in sql]) == 3
    assert len(made) == 3  # Django's own INSERTs': the events reused the first save's cursor
    assert Event.objects.filter(name="create").count() == 4


def test_in_autocommit_an_event_after_the_connection_was_closed_is_written():
    Article.objects.create(title="before")  # the cursor kept for the events is made here
    connection.close()

    Article.objects.create(title="after")  # a new connection: a new cursor, not the old one

    assert sorted(titles()) == sorted(
        str(pk) for pk in Article.objects.values_list("pk", flat=True)
    )
    assert Event.objects.count() == 2


def create_then_fail(title: str) -> None:
    with transaction.atomic():
        Article.objects.create(title=title)
        raise RuntimeError


def test_a_rolled_back_transaction_leaves_no_event_and_no_hooks():
    with pytest.raises(RuntimeError):
        create_then_fail("gone")

    Article.objects.create(title="kept")  # the next transaction is not handed the old events

    assert Event.objects.count() == 1
    assert not watching()


def test_a_query_in_the_same_transaction_sees_its_events():
    with transaction.atomic():
        article = Article.objects.create(title="seen")
        assert Event.objects.filter(object_id=str(article.pk)).count() == 1
        Article.objects.create(title="after the read")

    assert Event.objects.count() == 2


def test_rolling_back_to_a_savepoint_drops_exactly_the_events_after_it():
    with transaction.atomic():
        before = Article.objects.create(title="before")
        with pytest.raises(RuntimeError):
            create_then_fail("inside, rolled back")
        with transaction.atomic():
            inside = Article.objects.create(title="inside, released")
        after = Article.objects.create(title="after")

    assert titles() == sorted(str(article.pk) for article in (before, inside, after))


def test_a_failed_write_at_commit_rolls_the_whole_transaction_back():
    # Two events with one id: the INSERT at commit fails, and the caller's row goes with it.
    def create_with_twin_events():
        with transaction.atomic():
            Article.objects.create(title="must not stay")
            twin = Event.objects.get()
            outbox.add(Event(id=twin.id, name="create", body="{}"), connection.alias)
            outbox.add(Event(id=twin.id, name="create", body="{}"), connection.alias)

    with pytest.raises(IntegrityError):
        create_with_twin_events()

    assert not Article.objects.exists()
    assert not Event.objects.exists()
    assert not watching()


def test_another_execute_wrapper_opened_meanwhile_keeps_its_own_place():
    seen: list[str] = []

    def spy(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with transaction.atomic():
        with connection.execute_wrapper(spy):
            Article.objects.create(title="one")
        # Leaving the block must have removed the spy, not the outbox's wrapper.
        assert spy not in connection.execute_wrappers
        Article.objects.create(title="two")

    assert Event.objects.count() == 2
    assert not watching()


def test_events_of_a_connection_closed_mid_transaction_are_never_written():
    with transaction.atomic():
        Article.objects.create(title="lost with its connection")
        connection.close()  # the database rolls the transaction back by itself
        assert not watching()  # a pool could hand this DB-API connection out again

    Article.objects.create(title="next")

    assert list(Article.objects.values_list("title", flat=True)) == ["next"]
    assert Event.objects.count() == 1
    assert not watching()


class Interrupted(BaseException):
    """What a worker's time limit or Ctrl-C raises: not a DatabaseError."""


def test_an_interruption_while_writing_at_commit_commits_nothing(monkeypatch):
    def interrupted(using, objects):
        raise Interrupted

    monkeypatch.setattr("webhooks_app.sql.copy", interrupted)
    with pytest.raises(Interrupted), transaction.atomic():
        Article.objects.create(title="must not stay without its event")

    monkeypatch.undo()
    assert not Article.objects.exists()
    assert not watching()


def test_a_refused_rollback_keeps_the_events_with_their_transaction():
    with transaction.atomic():
        Article.objects.create(title="kept")
        with pytest.raises(TransactionManagementError):
            transaction.rollback()  # not allowed inside an atomic block: nothing rolled back

    assert Event.objects.count() == 1
    assert not watching()


@pytest.mark.parametrize(
    "statement",
    [
        'SELECT "webhooks_app_event"."id" FROM "webhooks_app_event"',
        'SELECT COUNT(*) FROM "webhooks_app_delivery" WHERE "status" = %s',
        'INSERT INTO "webhooks_app_deliveryattempt" ("delivery_id") VALUES (%s)',
        "update WEBHOOKS_APP_WEBHOOK set name = 'x'",
        'SAVEPOINT "s1_x1"',
        'RELEASE SAVEPOINT "s1_x1"',
        'ROLLBACK TO SAVEPOINT "s1_x1"',
        "  COMMIT",
        "rollback",
        "END",
        "BEGIN",
    ],
)
def test_statements_that_could_see_the_events_write_them_first(statement):
    assert outbox.could_see_events(statement) is True


def test_a_statement_on_the_callers_own_tables_leaves_the_events_waiting():
    statement = 'INSERT INTO "tests_article" ("title", "body") VALUES (%s, %s) RETURNING "id"'
    assert outbox.could_see_events(statement) is False
