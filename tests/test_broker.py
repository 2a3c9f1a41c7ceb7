"""Our hand-over to the ORM broker keeps the caller's database connection open."""

import pytest
from django.db import connection

from webhooks_app import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def test_enqueue_does_not_close_the_callers_connection(settings, monkeypatch):
    monkeypatch.setattr(tasks, "_brokers", {})
    broker = tasks._broker()
    connection.ensure_connection()
    before = connection.connection
    # The stock broker closes "old" connections, which with CONN_MAX_AGE=0 is every one.
    connection.close_at = 0

    broker.enqueue("payload")

    assert connection.connection is before
    assert broker.queue_size() == 1
