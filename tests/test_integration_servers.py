"""Proof that the integration run talks to real PostgreSQL and Redis servers.

These run only under ``make test-integration`` (``.ci/integration.sh``), which starts the
servers and exports the ``WEBHOOKS_TEST_*`` variables that switch ``tests.settings`` to them.
"""

import os

import pytest
import redis
from django.db import connection
from django_q.brokers import get_broker
from django_q.brokers.redis_broker import Redis as RedisBroker
from django_q.conf import Conf

pytestmark = pytest.mark.integration


def _redis_port() -> int:
    port = os.environ.get("WEBHOOKS_TEST_REDIS_PORT")
    assert port, "WEBHOOKS_TEST_REDIS_PORT is unset: run these via `make test-integration`"
    return int(port)


@pytest.mark.django_db
def test_default_database_is_postgresql():
    """The default database is a live PostgreSQL server, not SQLite."""
    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute("SELECT version(), inet_server_port()")
        version, port = cursor.fetchone()
    assert version.startswith("PostgreSQL")
    assert str(port) == os.environ["WEBHOOKS_TEST_POSTGRES_PORT"]


def test_redis_answers_ping():
    """A Redis server answers PING on 127.0.0.1 at the exported port."""
    client = redis.Redis(host="127.0.0.1", port=_redis_port(), socket_timeout=5)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_django_q_uses_the_redis_broker():
    """django-q is configured for that Redis server and its broker reaches it."""
    assert Conf.REDIS
    assert Conf.REDIS["port"] == _redis_port()
    assert not Conf.ORM
    broker = get_broker()
    assert isinstance(broker, RedisBroker)
    assert broker.ping() is True
