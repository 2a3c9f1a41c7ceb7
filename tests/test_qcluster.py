"""End to end through a real ``qcluster`` subprocess sharing the test database.

The same tests run on SQLite + the ORM broker in ``make test`` and on PostgreSQL + Redis in
the integration suite (``.ci/integration.sh`` sets the variables tests/settings.py reads).
"""

import hashlib
import hmac
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection, transaction
from django_q.brokers import get_broker
from django_q.conf import Conf

from tests.factories import ArticleFactory, WebhookFactory
from tests.receiver import Response
from webhooks_app import signing, tasks
from webhooks_app.models import Delivery, DeliveryAttempt, Event

pytestmark = [pytest.mark.qcluster, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent


class Cluster:
    """A ``manage.py qcluster`` process group, stopped for good at the end."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.log = ROOT / "tests" / "_artifacts" / f"qcluster-{os.getpid()}.log"

    def start(self) -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "WEBHOOKS_TEST_SYNC": "0",
            "WEBHOOKS_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
            "WEBHOOKS_TEST_LEASE_SECONDS": "10",
            "PYTHONPATH": str(ROOT),
        }
        self.log.parent.mkdir(exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "django", "qcluster"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL of the whole group: what an OOM killer or a pulled plug does."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if not self.process or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            # django-q2 can hang on SIGTERM (django-q2#23); the group must still go.
            self.kill()


@pytest.fixture
def cluster(monkeypatch):
    # This process enqueues for real now; the subprocess does the work.
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(tasks, "_last_wake", 0.0)
    # A Redis queue outlives the test database: start from an empty one.
    get_broker().purge_queue()
    running = Cluster()
    running.start()
    yield running
    running.stop()


def wait_until(condition, timeout, message):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(message)


def test_saved_model_reaches_the_receiver_signed(cluster, receiver):
    webhook = WebhookFactory(url=receiver.url)
    article = ArticleFactory(title="Through the cluster")

    (request,) = receiver.wait_for(1, timeout=30)
    assert request.json["event"] == "create"
    assert request.json["data"]["id"] == article.pk
    signing.verify_standard(webhook.secret, request.headers, request.body)
    expected = hmac.new(webhook.secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.header("X-Webhook-Signature") == expected
    wait_until(
        lambda: Delivery.objects.get().status == "succeeded", 10, "delivery was not recorded"
    )


def test_retry_fires_close_to_its_due_time(cluster, receiver):
    WebhookFactory(url=receiver.url)
    receiver.queue(Response(500))
    ArticleFactory()

    first, second = receiver.wait_for(2, timeout=30)
    attempts = list(DeliveryAttempt.objects.order_by("number"))
    wait_until(lambda: Delivery.objects.get().status == "succeeded", 10, "retry was not recorded")
    # RETRY_SCHEDULE[0] is 1 s with ±20% jitter; the dispatcher polls every second.
    assert second.received_at - first.received_at < 1.2 + 2.0
    assert attempts[0].response_status == 500


def test_lost_queue_message_is_recovered_without_anyone_acting(cluster, receiver, monkeypatch):
    real_enqueue = tasks._enqueue

    def lose_deliveries(func, *args):
        if func != tasks.RUN_TASK:
            real_enqueue(func, *args)

    monkeypatch.setattr(tasks, "_enqueue", lose_deliveries)
    WebhookFactory(url=receiver.url)
    ArticleFactory()

    # The event is in the database with nobody woken for it: the cluster's ticker finds it
    # on its next look (DISPATCH_INTERVAL), with no lease to wait for.
    (request,) = receiver.wait_for(1, timeout=15)
    assert request.json["event"] == "create"
    wait_until(
        lambda: Delivery.objects.get().status == "succeeded", 10, "recovery was not recorded"
    )


def test_cluster_killed_mid_burst_loses_nothing(cluster, receiver, settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "LEASE_SECONDS": 10}
    webhook = WebhookFactory(url=receiver.url)
    receiver.default = Response(200, delay=0.02)
    with transaction.atomic():
        ArticleFactory.create_batch(150)
    event_ids = set(Event.objects.values_list("id", flat=True))

    receiver.wait_for(20, timeout=30)
    cluster.kill()
    unfinished = Delivery.objects.filter(status="pending").exists() or (
        Event.objects.filter(pending_fanout=True).exists()
    )
    assert unfinished, "the kill came too late"
    cluster.start()

    wait_until(
        lambda: Delivery.objects.filter(status="succeeded").count() == len(event_ids),
        90,
        "deliveries were lost with the killed cluster",
    )
    received = [request.header("webhook-id") for request in receiver.requests]
    assert set(received) == event_ids
    # At-least-once: what a killed worker sent but had not yet recorded is sent again. Rows
    # stay leased until their outcome is written, so that is at most the endpoint's cap.
    assert len(received) - len(event_ids) <= webhook.effective_max_in_flight


def test_flushed_queue_loses_nothing(cluster, receiver, settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "LEASE_SECONDS": 10}
    cluster.stop()
    WebhookFactory(url=receiver.url)
    with transaction.atomic():
        ArticleFactory.create_batch(30)
    # Every message is gone: FLUSHALL on Redis, a truncated queue table with the ORM broker.
    get_broker().purge_queue()
    cluster.start()

    receiver.wait_for(30, timeout=60)
    wait_until(
        lambda: Delivery.objects.filter(status="succeeded").count() == 30,
        30,
        "deliveries were lost with the queue",
    )
