from collections.abc import Iterator

import pytest

from tests.factories import ArticleFactory, UserFactory, WebhookFactory
from tests.receiver import Receiver
from webhooks_app import subscriptions


@pytest.fixture(autouse=True)
def fresh_subscriptions():
    """Each test starts with no copy of the subscriptions: a rolled-back test deletes its
    webhooks without the signals that would tell this process's copy."""
    subscriptions.forget()
    yield
    subscriptions.forget()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def webhook(db, receiver):
    return WebhookFactory(url=receiver.url)


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def make_article(db):
    return ArticleFactory
