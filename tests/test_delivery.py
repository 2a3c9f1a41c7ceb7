"""Delivery against a real HTTP server on 127.0.0.1: requests, outcomes, retries, records."""

import datetime
import hashlib
import hmac
import logging
import queue
import socket
import threading
import time

import pytest
import time_machine
from django.utils import timezone

from tests.factories import ArticleFactory, WebhookFactory
from tests.receiver import Response
from webhooks_app import delivery, http, operations, retry, signing, sql, tasks
from webhooks_app.models import Delivery, DeliveryAttempt, Event, Webhook
from webhooks_app.signals import webhook_disabled

pytestmark = [pytest.mark.django_db, pytest.mark.portable]


@pytest.fixture
def no_jitter(settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "RETRY_JITTER": 0, "RETRY_SCHEDULE": [10, 20, 40]}


@pytest.fixture
def save_and_send(django_capture_on_commit_callbacks):
    """Save an article and run the on-commit enqueue (tasks run inline in the suite)."""

    def run(**fields):
        with django_capture_on_commit_callbacks(execute=True):
            return ArticleFactory(**fields)

    return run


def dispatch_at(moment):
    """One engine run (inline, as a worker would) with the clock at ``moment``."""
    with time_machine.travel(moment, tick=False):
        return tasks.run()


def test_request_carries_body_and_verifiable_signatures(webhook, receiver, save_and_send):
    webhook.headers = {"X-Custom-Header": "value", "Content-Type": "text/plain"}
    webhook.save()
    save_and_send(title="Signed")

    (request,) = receiver.wait_for(1)
    event = Event.objects.get()
    assert request.method == "POST"
    assert request.body == event.body.encode()
    assert request.header("Content-Type") == "application/json"
    assert request.header("User-Agent") == "django-webhooks/0.1.0"
    assert request.header("X-Custom-Header") == "value"
    assert request.header("webhook-id") == event.id == request.json["id"]
    assert abs(int(request.header("webhook-timestamp")) - timezone.now().timestamp()) < 5
    signing.verify_standard(webhook.secret, request.headers, request.body)
    expected = hmac.new(webhook.secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.header("X-Webhook-Signature") == expected


def test_per_webhook_signature_header_and_method(webhook, receiver, save_and_send):
    webhook.signature_header = "X-Scalar-Signature"
    webhook.signature_prefix = "sha256="
    webhook.method = "PUT"
    webhook.save()
    save_and_send()

    (request,) = receiver.wait_for(1)
    expected = hmac.new(webhook.secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.method == "PUT"
    assert request.header("X-Scalar-Signature") == f"sha256={expected}"
    assert request.header("X-Webhook-Signature") is None


def test_success_is_recorded_with_the_attempt(webhook, receiver, save_and_send):
    webhook.headers = {"Authorization": "Bearer hunter2"}
    webhook.save()
    receiver.queue(Response(200, b'{"ok": true}', {"X-Receiver": "yes"}))
    save_and_send()

    row = Delivery.objects.get()
    assert row.status == "succeeded"
    assert row.attempts == 1
    assert row.last_status_code == 200
    assert row.lease_token == ""
    assert row.next_attempt_at is None
    attempt = row.attempts_log.get()
    assert attempt.outcome == "succeeded"
    assert attempt.trigger == "automatic"
    assert attempt.response_status == 200
    assert attempt.response_body == '{"ok": true}'
    assert attempt.response_headers["X-Receiver"] == "yes"
    assert attempt.request_headers["Authorization"] == "[redacted]"
    assert attempt.request_headers["webhook-signature"].startswith("v1,")
    assert "hunter2" not in str(attempt.request_headers)
    webhook.refresh_from_db()
    assert webhook.last_delivery_status == "succeeded"
    assert webhook.consecutive_failures == 0


def test_retries_follow_the_schedule_with_a_frozen_clock(
    webhook, receiver, save_and_send, no_jitter
):
    receiver.queue(Response(500), Response(502), Response(500))
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        save_and_send()
    row = Delivery.objects.get()
    assert row.status == "pending"
    assert row.next_attempt_at == start + datetime.timedelta(seconds=10)

    assert dispatch_at(start + datetime.timedelta(seconds=9)) == 0
    assert dispatch_at(start + datetime.timedelta(seconds=10)) == 1
    row.refresh_from_db()
    assert row.attempts == 2
    assert row.next_attempt_at == start + datetime.timedelta(seconds=30)
    assert dispatch_at(start + datetime.timedelta(seconds=30)) == 1
    row.refresh_from_db()
    assert row.next_attempt_at == start + datetime.timedelta(seconds=70)
    assert dispatch_at(start + datetime.timedelta(seconds=70)) == 1

    row.refresh_from_db()
    assert row.status == "succeeded"
    assert row.attempts == 4
    assert [a.response_status for a in row.attempts_log.all()] == [500, 502, 500, 200]
    assert [a.outcome for a in row.attempts_log.all()] == ["retrying"] * 3 + ["succeeded"]
    assert len(receiver.requests) == 4


def test_every_retry_sends_identical_bytes_under_the_same_id(
    webhook, receiver, save_and_send, no_jitter
):
    receiver.queue(Response(500))
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        save_and_send()
    dispatch_at(start + datetime.timedelta(seconds=11))

    first, second = receiver.wait_for(2)
    assert first.body == second.body
    assert first.header("webhook-id") == second.header("webhook-id")
    assert int(second.header("webhook-timestamp")) - int(first.header("webhook-timestamp")) >= 10
    for request in (first, second):
        signing.verify_standard(
            webhook.secret,
            request.headers,
            request.body,
            now=int(request.header("webhook-timestamp")),
        )


def test_jitter_spreads_retries_within_bounds(settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "RETRY_SCHEDULE": [100], "RETRY_JITTER": 0.2}
    delays = [retry.retry_delay(1) for _ in range(500)]

    assert all(80 <= delay <= 120 for delay in delays)
    assert max(delays) - min(delays) > 20


def test_exponential_schedule_from_the_seeds():
    seed_001 = {"initial": 60, "factor": 2, "max": 1800}
    assert [retry.schedule_delay(n, seed_001) for n in range(1, 10)] == [
        60,
        120,
        240,
        480,
        960,
        1800,
        1800,
        1800,
        1800,
    ]
    seed_004 = [30, 300, 1800, 7200]
    assert [retry.schedule_delay(n, seed_004) for n in range(1, 6)] == [30, 300, 1800, 7200, 7200]


def test_delivery_fails_visibly_when_retries_are_spent(receiver, save_and_send, no_jitter):
    webhook = WebhookFactory(url=receiver.url, retries=1)
    receiver.default = Response(500, b"boom")
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        save_and_send()
    dispatch_at(start + datetime.timedelta(seconds=10))

    row = Delivery.objects.get()
    assert row.status == "failed"
    assert row.attempts == 2
    assert row.last_error == "HTTP 500 (boom)"  # the status and the start of what it said
    assert row.completed_at is not None
    assert [a.outcome for a in row.attempts_log.all()] == ["retrying", "failed"]
    assert dispatch_at(start + datetime.timedelta(days=1)) == 0
    webhook.refresh_from_db()
    assert webhook.consecutive_failures == 2
    assert webhook.last_delivery_status == "failed"


def test_gone_disables_the_webhook_at_once(webhook, receiver, save_and_send, no_jitter):
    receiver.queue(Response(500))
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        save_and_send()  # waits for its retry in 10 s
    receiver.default = Response(410)
    disabled = []

    def on_disabled(sender, webhook, reason, **kwargs):
        disabled.append(reason)

    webhook_disabled.connect(on_disabled)
    try:
        with time_machine.travel(start, tick=False):
            save_and_send()
    finally:
        webhook_disabled.disconnect(on_disabled)

    webhook.refresh_from_db()
    assert webhook.is_active is False
    assert "410" in webhook.disabled_reason
    assert disabled == [webhook.disabled_reason]
    # The retry that was waiting is skipped when it comes due, without a request.
    dispatch_at(start + datetime.timedelta(seconds=11))
    statuses = sorted(Delivery.objects.values_list("status", flat=True))
    assert statuses == ["failed", "skipped"]
    skipped = Delivery.objects.get(status="skipped")
    assert "410" in skipped.last_error
    assert len(receiver.requests) == 2
    # Events for a disabled webhook are kept, skipped for the reason, and never sent.
    save_and_send()
    assert Delivery.objects.count() == 3
    assert Delivery.objects.filter(status="skipped").count() == 2
    assert len(receiver.requests) == 2


@pytest.mark.parametrize(
    ("status", "retry_after", "expected_delay"),
    [
        (429, "7", 7),
        (503, "120", 120),
        (429, "999999", 3600),
        (429, "0", 1),
    ],
)
def test_retry_after_is_honoured_within_bounds(
    webhook, receiver, save_and_send, no_jitter, status, retry_after, expected_delay
):
    receiver.queue(Response(status, headers={"Retry-After": retry_after}))
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        save_and_send()

    row = Delivery.objects.get()
    assert row.next_attempt_at == start + datetime.timedelta(seconds=expected_delay)


def test_retry_after_as_http_date():
    now = datetime.datetime(2026, 11, 22, 12, 0, 0, tzinfo=datetime.UTC)
    assert retry.parse_retry_after("Sun, 22 Nov 2026 12:01:30 GMT", now) == 90
    assert retry.parse_retry_after("soon", now) is None


def test_429_without_retry_after_uses_the_schedule(webhook, receiver, save_and_send, no_jitter):
    receiver.queue(Response(429))
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        save_and_send()

    assert Delivery.objects.get().next_attempt_at == start + datetime.timedelta(seconds=10)


def test_redirects_are_not_followed(webhook, receiver, save_and_send):
    receiver.queue(Response(302, headers={"Location": receiver.url + "/elsewhere"}))
    save_and_send()

    assert len(receiver.wait_for(1)) == 1
    row = Delivery.objects.get()
    assert row.status == "pending"
    assert row.last_status_code == 302


def test_connection_refused_is_recorded_and_retried(db, save_and_send):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    WebhookFactory(url=f"http://127.0.0.1:{closed_port}/hook")
    save_and_send()

    attempt = DeliveryAttempt.objects.get()
    assert attempt.response_status is None
    assert attempt.error_class == "ConnectionError"
    assert attempt.summary == f"Connection refused (127.0.0.1:{closed_port})"
    # Below the plain words, what was raised stays on the attempt for whoever digs deeper.
    plain, raised = attempt.error_message.split("\n\n", 1)
    assert plain == attempt.summary
    assert "aiohttp.client_exceptions.ClientConnectorError" in raised
    assert "ConnectionRefusedError" in raised
    assert attempt.outcome == "retrying"
    assert Delivery.objects.get().last_error.startswith("Connection refused (127.0.0.1:")


def test_timeout_is_recorded_and_retried(receiver, save_and_send):
    WebhookFactory(url=receiver.url, timeout=0.3)
    receiver.queue(Response(200, delay=2))
    save_and_send()

    attempt = DeliveryAttempt.objects.get()
    assert attempt.error_class == "Timeout"
    assert attempt.error_message == "Timed out after 0.3 s waiting for the response"
    assert attempt.duration_ms < 1500
    assert Delivery.objects.get().status == "pending"


@pytest.fixture
def self_signed_server(tmp_path):
    """An HTTPS server on 127.0.0.1 whose certificate no public CA signed."""
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    class Answer(BaseHTTPRequestHandler):
        def do_POST(self):  # never reached: the client refuses the certificate first
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_an_untrusted_certificate_is_named_in_plain_words(db, save_and_send, self_signed_server):
    WebhookFactory(url=self_signed_server)
    save_and_send()

    attempt = DeliveryAttempt.objects.get()
    assert attempt.error_class == "TLSError"
    assert attempt.summary.startswith("TLS certificate is self-signed (127.0.0.1)")
    assert attempt.outcome == "retrying"


@pytest.mark.parametrize(
    ("code", "message", "summary"),
    [
        (62, "Hostname mismatch", "TLS certificate not valid for host hooks.example.com: "),
        (10, "certificate has expired", "TLS certificate expired (hooks.example.com): "),
        (20, "unable to get local issuer certificate", "TLS certificate issuer unknown"),
        (99, "something else", "TLS certificate rejected: something else"),
    ],
)
def test_certificate_failures_say_which_problem_it_is(code, message, summary):
    import ssl

    error = ssl.SSLCertVerificationError(1, message)
    error.verify_code = code
    error.verify_message = message

    assert http._certificate_problem(error, "hooks.example.com").startswith(summary)


def test_dns_failure_is_recorded_and_retried(db, save_and_send, monkeypatch):
    def no_such_host(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    # Only this process's resolver is replaced: the test never leaves the machine.
    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    WebhookFactory(url="http://hooks.example.invalid/hook")
    save_and_send()

    attempt = DeliveryAttempt.objects.get()
    assert attempt.error_class == "NameResolutionError"
    assert attempt.error_message.startswith("DNS: no such host")
    assert attempt.outcome == "retrying"


def test_response_body_is_capped(webhook, receiver, save_and_send, settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "RESPONSE_BODY_LIMIT": 1000}
    receiver.queue(Response(200, b"x" * 200_000))
    save_and_send()

    assert len(DeliveryAttempt.objects.get().response_body) == 1000


def test_a_response_body_with_nul_bytes_is_recorded(webhook, receiver, save_and_send):
    # PostgreSQL text cannot hold NUL: stored as is, it failed the whole batch's write.
    receiver.queue(Response(500, b"bad\x00body \xff"))
    save_and_send()

    attempt = DeliveryAttempt.objects.get()
    assert attempt.response_status == 500
    assert attempt.response_body == "bad\ufffdbody \ufffd"
    assert Delivery.objects.get().attempts == 1


def test_disabled_webhook_skips_its_pending_deliveries(webhook, receiver, no_jitter):
    receiver.queue(Response(500))
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        ArticleFactory()  # not committed in this test: a worker finds it by looking
        assert tasks.run() == 1
    Webhook.objects.filter(pk=webhook.pk).update(is_active=False, disabled_reason="Paused")

    assert dispatch_at(start + datetime.timedelta(seconds=11)) == 0
    row = Delivery.objects.get()
    assert row.status == "skipped"
    assert "Paused" in row.last_error
    assert row.lease_token == ""
    assert len(receiver.requests) == 1


def test_rows_another_worker_holds_are_left_alone_until_its_lease_runs_out(webhook, receiver):
    ArticleFactory()
    tasks.run()  # fans the event out and sends it
    row = Delivery.objects.get()
    assert row.status == "succeeded"
    operations.retry_deliveries([row])
    lease_until = timezone.now() + datetime.timedelta(seconds=45)
    Delivery.objects.filter(pk=row.pk).update(
        lease_token="someone-else", next_attempt_at=lease_until
    )

    assert tasks.run() == 0
    assert len(receiver.requests) == 1
    with time_machine.travel(lease_until + datetime.timedelta(seconds=1), tick=False):
        assert tasks.run() == 1
    assert len(receiver.requests) == 2
    row.refresh_from_db()
    assert row.status == "succeeded"
    assert row.lease_token == ""


def test_debug_logging_never_shows_the_secret(webhook, receiver, save_and_send, settings, caplog):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "DEBUG": True}
    receiver.queue(Response(200), Response(500))
    with caplog.at_level(logging.INFO, logger="webhooks_app"):
        save_and_send()
        save_and_send()

    records = [r for r in caplog.records if r.name.startswith("webhooks_app")]
    levels = [record.levelname for record in records]
    assert levels == ["INFO", "WARNING"]
    assert "HTTP 500" in records[1].getMessage()
    assert webhook.secret not in caplog.text


def test_send_never_raises_on_a_malformed_url():
    request = http.OutgoingRequest("POST", "http://[::1", {}, b"{}", 1.0)

    result = http.send(request)
    assert result.status_code is None
    assert result.error_class


def test_submit_all_reports_every_request_and_a_cancelled_one_stops(receiver):
    """One hand-over starts them all, each outcome reaches the callback once; cancelling
    one (the engine's guard does) closes its connection instead of leaving it to its
    deadline, and it is not reported."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    accepted = threading.Event()
    closed = threading.Event()

    def hang_until_closed() -> None:
        connection, _ = listener.accept()
        accepted.set()
        connection.settimeout(5)
        while connection.recv(4096):  # never answers; b"" once the client closed
            pass
        closed.set()
        connection.close()

    threading.Thread(target=hang_until_closed, daemon=True).start()
    hanging_url = f"http://127.0.0.1:{listener.getsockname()[1]}/hang"
    requests = [
        (http.OutgoingRequest("POST", f"{receiver.url}?n={n}", {}, b"{}", 5.0), None)
        for n in range(3)
    ]
    requests.append((http.OutgoingRequest("POST", hanging_url, {}, b"{}", 30.0), None))
    reported: queue.SimpleQueue[tuple[int, object]] = queue.SimpleQueue()

    handles = http.submit_all(requests, lambda index, outcome: reported.put((index, outcome)))
    answered = sorted(reported.get(timeout=5) for _ in range(3))
    assert [index for index, _ in answered] == [0, 1, 2]
    assert [outcome.status_code for _, outcome in answered] == [200, 200, 200]
    assert sorted(request.path for request in receiver.requests) == [
        "/hook?n=0",
        "/hook?n=1",
        "/hook?n=2",
    ]
    try:
        assert accepted.wait(timeout=5)
        handles[3].cancel()
        assert closed.wait(timeout=5)  # long before its 30 s deadline
        time.sleep(0.2)
        assert reported.empty()  # a cancelled request is not reported
    finally:
        listener.close()


def test_a_request_cancelled_before_the_loop_starts_it_is_never_sent(receiver):
    started = threading.Event()
    release = threading.Event()
    loop = http.transport().loop
    # Hold the loop's thread so that the cancel lands before submit_all's hand-over runs.
    loop.call_soon_threadsafe(lambda: (started.set(), release.wait(5)))
    assert started.wait(5)
    request = http.OutgoingRequest("POST", receiver.url, {}, b"{}", 5.0)
    reported = []
    (handle,) = http.submit_all([(request, None)], lambda index, outcome: reported.append(outcome))
    handle.cancel()
    release.set()
    time.sleep(0.3)
    assert reported == []
    assert receiver.requests == []


def test_a_row_that_cannot_be_attempted_still_reaches_an_outcome(webhook, receiver):
    ArticleFactory()
    ArticleFactory()
    # Malformed data that got past validation (e.g. through a raw JSON field).
    Webhook.objects.filter(pk=webhook.pk).update(headers=["not", "a", "dict"])

    assert tasks.run() == 2

    assert receiver.requests == []
    for row in Delivery.objects.all():
        assert row.status == "failed"
        assert row.last_error.startswith("Could not send: AttributeError")
        assert row.lease_token == ""
    assert DeliveryAttempt.objects.filter(error_class="AttributeError").count() == 2


def test_a_worker_that_lost_its_lease_does_not_overwrite_the_new_holder(webhook):
    event = Event.objects.create(name="create", body="{}")
    row = Delivery.objects.create(event=event, webhook=webhook, lease_token="the-new-holder")
    row.status = "succeeded"
    row.lease_token = ""

    assert delivery.write_outcomes([row], "the-old-holder") == 0

    row.refresh_from_db()
    assert row.status == "pending"
    assert row.lease_token == "the-new-holder"


@pytest.mark.parametrize("statements", ["hand-written", "orm"])
def test_writing_outcomes_counts_the_rows_still_held(webhook, monkeypatch, statements):
    """The count decides whether the writer looks for rows deleted meanwhile (Python's
    sqlite3 counts no rows of a statement that does not start with UPDATE)."""
    if statements == "orm":
        monkeypatch.setattr(sql, "supported", lambda using: False)
    event = Event.objects.create(name="create", body="{}")
    rows = [
        Delivery.objects.create(event=event, webhook=webhook, lease_token=holder)
        for holder in ("mine", "mine", "someone else's")
    ]
    for row in rows:
        row.status = "succeeded"
        row.lease_token = ""

    assert delivery.write_outcomes(rows, "mine") == 2
    assert sorted(Delivery.objects.values_list("status", flat=True)) == [
        "pending",
        "succeeded",
        "succeeded",
    ]


def test_a_huge_backoff_factor_is_capped_not_an_overflow():
    schedule = {"initial": 60, "factor": 1e6, "max": 3600}

    assert retry.schedule_delay(500, schedule) == 3600


def test_each_attempt_says_what_happened_in_plain_words(
    receiver, staff_client_for_summary, admin_client
):
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    closed_port = refused.getsockname()[1]
    refused.close()  # nothing listens there now
    WebhookFactory(url=receiver.url, retries=0)
    WebhookFactory(url=f"http://127.0.0.1:{closed_port}/hook", retries=0)
    receiver.queue(Response(401, body=b'{"error":\n  "Invalid signature"}'))
    ArticleFactory()

    tasks.run()

    summaries = sorted(DeliveryAttempt.objects.values_list("summary", flat=True))
    assert summaries == [
        f"Connection refused (127.0.0.1:{closed_port})",
        "HTTP 401 (Invalid signature)",
    ]
    assert sorted(Delivery.objects.values_list("last_error", flat=True)) == summaries
    # Each attempt carries its webhook (the webhook page's chart reads them by it).
    assert [a.webhook_id == a.delivery.webhook_id for a in DeliveryAttempt.objects.all()] == [
        True,
        True,
    ]
    row = Delivery.objects.get(last_status_code=401)
    api = staff_client_for_summary.get(f"/api/deliveries/{row.pk}/").json()
    assert api["attempts_log"][0]["summary"] == "HTTP 401 (Invalid signature)"
    listed = admin_client.get("/admin/webhooks_app/delivery/").content.decode()
    assert all(summary in listed for summary in summaries)  # the cause, not only the code


@pytest.fixture
def staff_client_for_summary(db):
    from rest_framework.test import APIClient

    from tests.factories import UserFactory

    client = APIClient()
    client.force_authenticate(UserFactory(is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize(
    "zone",
    [datetime.UTC, datetime.timezone(datetime.timedelta(hours=5, minutes=30))],
    ids=["utc", "plus-0530"],
)
def test_the_engines_bulk_insert_stores_values_as_the_orm_does(webhook, zone):
    """``sql.insert`` (one JSON parameter on PostgreSQL, VALUES on SQLite) against the ORM:
    awkward text, microseconds, NULLs, empty strings, JSON columns and timestamps in any
    zone (read as they are, not through the field) come back alike."""
    from webhooks_app import sql

    ArticleFactory()
    event = Event.objects.get()
    row = Delivery.objects.create(event=event, webhook=webhook, next_attempt_at=None)
    started = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=zone)
    values = {
        "delivery": row,
        "webhook": webhook,
        "number": 2,
        "trigger": "manual",
        "outcome": "failed",
        "started_at": started,
        "duration_ms": 0,
        "request_method": "POST",
        "request_url": "https://example.com/hook?a=1&b='\"x\"'",
        "request_headers": {"X-Quote": 'a "b" \\ c', "Ünï": "çødé", "nested": ["1", None]},
        "response_status": None,
        "response_headers": {},
        "response_body": 'line 1\nline 2\t{"json": "text"} \\ ,{}',
        "error_class": "",
        "error_message": "naïve 💥",
        "summary": "HTTP 5xx",
    }
    by_orm = DeliveryAttempt.objects.create(**values)
    by_engine = DeliveryAttempt(**values)

    sql.insert("default", [by_engine], returning_ids=True)

    assert by_engine.pk is not None
    assert by_engine.pk != by_orm.pk
    fields = [f.attname for f in DeliveryAttempt._meta.concrete_fields if f.name != "id"]
    stored = DeliveryAttempt.objects.values(*fields)
    assert stored.get(pk=by_engine.pk) == stored.get(pk=by_orm.pk)


def test_a_success_after_successes_rewrites_the_webhook_at_most_every_refresh_interval(webhook):
    start = timezone.now()
    delivery._update_webhook_stats(webhook.pk, [True], start, "default")
    webhook.refresh_from_db()
    assert (webhook.last_delivery_at, webhook.last_delivery_status) == (start, "succeeded")

    # Only the time would change: the row (a hot one, locked by each claim) is left alone.
    soon = start + datetime.timedelta(seconds=delivery.STATS_REFRESH_SECONDS / 2)
    delivery._update_webhook_stats(webhook.pk, [True], soon, "default")
    webhook.refresh_from_db()
    assert webhook.last_delivery_at == start

    later = start + datetime.timedelta(seconds=delivery.STATS_REFRESH_SECONDS + 0.1)
    delivery._update_webhook_stats(webhook.pk, [True], later, "default")
    webhook.refresh_from_db()
    assert webhook.last_delivery_at == later


@pytest.mark.parametrize(
    "written_by_another_worker",
    [
        {"consecutive_failures": 3},
        {"failing_since": "now"},
        {"disable_warned_at": "now"},
        {"last_delivery_status": "failed"},
    ],
    ids=["failures", "failing-since", "warned", "status"],
)
def test_a_success_resets_what_another_worker_wrote_at_once(webhook, written_by_another_worker):
    start = timezone.now()
    delivery._update_webhook_stats(webhook.pk, [True], start, "default")
    stale = {
        field: start if value == "now" else value
        for field, value in written_by_another_worker.items()
    }
    Webhook.objects.filter(pk=webhook.pk).update(**stale)

    soon = start + datetime.timedelta(seconds=delivery.STATS_REFRESH_SECONDS / 2)
    delivery._update_webhook_stats(webhook.pk, [True], soon, "default")

    webhook.refresh_from_db()
    assert webhook.consecutive_failures == 0
    assert webhook.failing_since is None
    assert webhook.disable_warned_at is None
    assert (webhook.last_delivery_at, webhook.last_delivery_status) == (soon, "succeeded")
