"""End to end through a real ``qcluster`` subprocess sharing the test database.

The same tests run on SQLite + the ORM broker in ``make test`` and on PostgreSQL + Redis in
the integration suite (``.ci/integration.sh`` sets the variables tests/settings.py reads).
"""

import contextlib
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

from tests import netguard
from tests.factories import ArticleFactory, WebhookFactory
from tests.hostile import HostileReceiver
from tests.receiver import Response
from webhooks_app import signing, tasks
from webhooks_app.models import Delivery, DeliveryAttempt, Event, Webhook

pytestmark = [pytest.mark.qcluster, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent


class Cluster:
    """A ``manage.py qcluster`` process group, stopped for good at the end."""

    def __init__(self, name: str = "a", **environment: str) -> None:
        self.environment = environment
        self.process: subprocess.Popen[bytes] | None = None
        self.log = ROOT / "tests" / "_artifacts" / f"qcluster-{os.getpid()}-{name}.log"

    def start(self) -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "WEBHOOKS_TEST_SYNC": "0",
            "WEBHOOKS_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
            "WEBHOOKS_TEST_LEASE_SECONDS": "10",
            "PYTHONPATH": str(ROOT),
            **self.environment,
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

    def graceful_stop(self, timeout: float) -> float:
        """SIGTERM to the main process only (django-q2's graceful stop: workers finish what
        they pulled); returns the seconds it took, or fails after ``timeout``."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the cluster did not stop within {timeout} s") from None
        # Its workers are gone with it (they are daemonic children of the sentinel).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return time.monotonic() - started


@pytest.fixture
def enqueue_for_real(monkeypatch):
    # This process enqueues for real now; the subprocess does the work.
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(tasks, "_last_wake", 0.0)
    # The test process must not run a ticker of its own (it has no worker to wake).
    monkeypatch.setattr(tasks, "start_ticker", lambda: None)
    # A Redis queue outlives the test database: start from an empty one.
    get_broker().purge_queue()


@pytest.fixture
def cluster(enqueue_for_real):
    running = Cluster()
    running.start()
    yield running
    running.stop()


@pytest.fixture
def short_runs_cluster(enqueue_for_real):
    """A cluster whose runs stop claiming after half a second, so that runs end (and would
    wait for their last requests) many times during a test."""
    running = Cluster("short-runs", WEBHOOKS_TEST_TASK_SECONDS="0.5")
    running.start()
    yield running
    running.stop()


@pytest.fixture
def second_cluster(cluster):
    """Another cluster on the same database and broker, as on a second machine."""
    running = Cluster("b")
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
    # stay leased until their outcome is written: the endpoint's cap of requests out, plus
    # the successes their run counted free but had not written yet (claims.claim: at most
    # what was out before, so at most another cap's worth).
    assert len(received) - len(event_ids) <= 2 * webhook.effective_max_in_flight


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


def test_an_endpoints_cap_holds_across_two_clusters(cluster, second_cluster, receiver):
    WebhookFactory(url=receiver.url, max_in_flight=3)
    receiver.default = Response(200, delay=0.3)
    with transaction.atomic():
        ArticleFactory.create_batch(24)

    receiver.wait_for(24, timeout=60)
    assert receiver.max_active == 3
    wait_until(
        lambda: Delivery.objects.filter(status="succeeded").count() == 24, 20, "not recorded"
    )


def test_a_rate_limit_holds_across_two_clusters(cluster, second_cluster, receiver):
    WebhookFactory(url=receiver.url, rate_limit=4)
    with transaction.atomic():
        ArticleFactory.create_batch(12)

    requests = receiver.wait_for(12, timeout=60)
    times = sorted(request.received_at for request in requests)
    # 4 a second, from whichever cluster: slots 250 ms apart. A send can start a little
    # late (its process was busy), which shortens the gap after it, never the rate: so no
    # second holds more than its four slots and one late send (CI once saw the first
    # request 130 ms late, a 119 ms gap after it, and every other gap 250 ms). Two clusters
    # each keeping its own limit would put eight in a second.
    busiest = max(sum(1 for other in times if start <= other < start + 1.0) for start in times)
    assert busiest <= 5
    assert 11 / (times[-1] - times[0]) <= 4 * 1.05


def test_a_hanging_endpoint_does_not_delay_another_in_the_cluster(cluster, receiver):
    hanging = HostileReceiver("hang")
    try:
        WebhookFactory(url=hanging.url, timeout=5)
        WebhookFactory(url=receiver.url)
        ArticleFactory()  # warm: the workers are up and have pools
        receiver.wait_for(1, timeout=30)
        with transaction.atomic():
            ArticleFactory.create_batch(20)
        committed = time.time()

        requests = receiver.wait_for(21, timeout=10)
        assert max(r.received_at for r in requests) - committed < 1.0
    finally:
        hanging.close()


def test_runs_that_end_beside_a_hanging_endpoint_do_not_hold_the_workers(
    short_runs_cluster, receiver
):
    # Every run ends with the hanging endpoint's requests still out (their deadline is 5 s,
    # a run claims for 0.5 s). Were a worker to wait for them, both workers would soon be
    # waiting and the fast endpoint's deliveries would wait up to five seconds.
    hanging = HostileReceiver("hang")
    try:
        WebhookFactory(url=hanging.url, timeout=5)
        WebhookFactory(url=receiver.url)
        ArticleFactory()
        receiver.wait_for(1, timeout=30)
        committed_at = {}
        for number in range(16):
            article = ArticleFactory(title=f"t{number}")
            committed_at[str(article.pk)] = time.time()
            time.sleep(0.25)

        requests = receiver.wait_for(17, timeout=10)
        delays = [
            request.received_at - committed_at[str(request.json["data"]["id"])]
            for request in requests
            if str(request.json["data"]["id"]) in committed_at
        ]
        assert len(delays) == 16
        assert max(delays) < 1.0, sorted(delays)
    finally:
        hanging.close()


def test_a_graceful_stop_takes_seconds_and_records_what_was_in_flight(cluster, receiver):
    WebhookFactory(url=receiver.url)
    receiver.default = Response(200, delay=1.0)
    with transaction.atomic():
        ArticleFactory.create_batch(10)
    receiver.wait_for(10, timeout=30)  # all ten are in flight now, answered in a second

    assert cluster.graceful_stop(timeout=15) < 15
    assert Delivery.objects.filter(status="succeeded").count() == 10
    assert DeliveryAttempt.objects.count() == 10


GUARDED_TARGETS = [
    "https://127.0.0.1/hook",
    "https://10.0.0.1/hook",
    "https://169.254.169.254/latest/meta-data/",
    "https://[::1]/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://0.0.0.0/hook",
    "https://2130706433/hook",
    "https://0177.0.0.1/hook",
    "https://localhost/hook",
    "https://rebind.test/hook",
]


def test_queued_deliveries_to_internal_targets_are_blocked_in_the_workers(enqueue_for_real):
    """Through a real cluster with the package's defaults, behind tests/netguard.py in the
    cluster's processes: the control webhook (a public address) shows the guard sees what
    the workers connect to; none of the others is connected to."""
    log = ROOT / "tests" / "_artifacts" / f"netguard-{os.getpid()}.log"
    log.parent.mkdir(exist_ok=True)
    log.unlink(missing_ok=True)
    redis_port = os.environ.get("WEBHOOKS_TEST_REDIS_PORT")
    guarded = Cluster(
        "guarded",
        WEBHOOKS_TEST_DEFAULT_TARGETS="1",
        PYTHONPATH=f"{ROOT / 'tests' / 'netguard_site'}{os.pathsep}{ROOT}",
        WEBHOOKS_TEST_NETGUARD=netguard.environment(
            str(log),
            allowed_ports=[int(redis_port)] if redis_port else [],
            # The name is public when a person checks it, loopback when a worker uses it.
            names={"rebind.test": ["127.0.0.1"], "public.test": ["93.184.216.34"]},
        ),
    )
    for url in GUARDED_TARGETS:
        Webhook.objects.create(url=url, secret="whsec_" + "a" * 32)
    control = Webhook.objects.create(url="https://public.test/hook", secret="whsec_" + "a" * 32)
    guarded.start()
    try:
        ArticleFactory()
        wait_until(
            lambda: DeliveryAttempt.objects.count() >= len(GUARDED_TARGETS) + 1,
            30,
            "the cluster attempted every delivery",
        )
    finally:
        guarded.stop()

    lines = log.read_text().splitlines()
    assert any(line.startswith("loaded ") for line in lines), "the guard was not loaded"
    connects = {line for line in lines if line.startswith("connect ")}
    assert connects == {"connect 93.184.216.34 443"}
    blocked = Delivery.objects.exclude(webhook=control)
    assert set(blocked.values_list("status", flat=True)) == {"failed"}
    assert set(
        DeliveryAttempt.objects.exclude(delivery__webhook=control).values_list(
            "error_class", flat=True
        )
    ) == {"Blocked"}


WRITER = """
import sys, time, django
django.setup()
from tests.models import Article
from webhooks_app.models import Event
Article.objects.create(title="before")  # this process's copy: nobody subscribed
print("saved", flush=True)
sys.stdin.readline()  # the parent changed the webhooks
time.sleep(float(sys.argv[1]))
Article.objects.create(title="after")
print(Event.objects.filter(object_id__in=[a.pk for a in Article.objects.all()]).count())
"""


def test_a_webhook_created_in_one_process_is_seen_by_another_within_the_cache_time(
    cluster, receiver
):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "WEBHOOKS_TEST_SYNC": "0",
        "WEBHOOKS_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "PYTHONPATH": str(ROOT),
    }
    cache_seconds = 1.0  # SUBSCRIPTION_CACHE_SECONDS, the default
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(cache_seconds + 0.2)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdin is not None
        assert writer.stdout.readline().strip() == "saved"
        WebhookFactory(url=receiver.url)
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "1"  # "after" was recorded, not "before"
        (request,) = receiver.wait_for(1, timeout=30)
        assert request.json["data"]["title"] == "after"
    finally:
        writer.kill()
        writer.wait(5)
