from collections.abc import Iterator

import pytest

from tests.factories import ArticleFactory, UserFactory, WebhookFactory
from tests.receiver import Receiver


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
