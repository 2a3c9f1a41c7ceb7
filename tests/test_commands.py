"""The webhooks_* management commands: arguments, output and exit codes, against real HTTP."""

from __future__ import annotations

import datetime
import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from tests.factories import ArticleFactory, WebhookFactory
from tests.receiver import Response
from webhooks_app import operations, signing, tasks
from webhooks_app.models import Delivery, DeliveryAttempt, DeliveryStatus, Event, Lease

pytestmark = pytest.mark.django_db(transaction=False)

REPO_DIR = Path(__file__).resolve().parent.parent
COMMANDS = [
    "webhooks_send_test",
    "webhooks_retry",
    "webhooks_prune",
    "webhooks_listen",
    "webhooks_status",
]


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def run_failing(*args: str) -> tuple[int, str, str]:
    out = io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command(*args, stdout=out, stderr=io.StringIO())
    return caught.value.returncode, str(caught.value), out.getvalue()


@pytest.fixture
def failed(webhook, receiver, django_capture_on_commit_callbacks):
    webhook.retries = 0
    webhook.save()
    receiver.queue(Response(500))
    with django_capture_on_commit_callbacks(execute=True):
        ArticleFactory()
    row = Delivery.objects.get()
    assert row.status == DeliveryStatus.FAILED
    return row


# --- every command ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_help_explains_and_exits_zero(command):
    result = subprocess.run(
        [sys.executable, "-m", "django", command, "--help", "--settings", "tests.settings"],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "Exit status" in result.stdout
    assert "manage.py " + command in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["webhooks_retry", "--bogus"], "unrecognized arguments: --bogus"),
        (["webhooks_status", "--max-due", "many"], "invalid int value"),
        (["webhooks_status", "--max-oldest", "soon"], "is not a duration"),
        # A bare number is no longer taken for seconds.
        (["webhooks_prune", "--succeeded-age", "30"], "'30' needs a unit: 30s, 30m, 30h, 30d"),
        (["webhooks_status", "--max-oldest", "90"], "'90' needs a unit: 90s, 90m"),
        (["webhooks_send_test"], "give a webhook"),
        (["webhooks_retry"], "choose deliveries with"),
    ],
)
def test_bad_arguments_get_one_line_and_exit_2(args, message):
    result = subprocess.run(
        [sys.executable, "-m", "django", *args, "--settings", "tests.settings"],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# --- webhooks_send_test ----------------------------------------------------------------------


def test_send_test_prints_request_and_response(webhook, receiver):
    receiver.default = Response(200, b"thanks")

    output = run("webhooks_send_test", str(webhook.pk), "--data", '{"n": 1}')

    (request,) = receiver.requests
    signing.verify_standard(webhook.secret, request.headers, request.body)
    assert request.json["data"] == {"n": 1}
    assert f"> POST {webhook.url}" in output
    assert "> webhook-signature: v1," in output
    assert "< HTTP 200 in" in output
    assert "< thanks" in output
    assert Delivery.objects.get().next_trigger == "automatic"
    assert DeliveryAttempt.objects.get().trigger == "test"


def test_send_test_by_name_with_event_and_model(webhook, receiver):
    run("webhooks_send_test", webhook.name, "--event", "backup.complete", "--model", "article")

    assert receiver.requests[0].json["event"] == "backup.complete"
    assert receiver.requests[0].json["model"] == "article"


def test_send_test_exits_1_when_not_2xx(webhook, receiver):
    receiver.queue(Response(503, b"down"))

    code, message, output = run_failing("webhooks_send_test", str(webhook.pk))

    assert code == 1
    assert "HTTP 503" in message
    assert "< down" in output


def test_send_test_ad_hoc_url_leaves_no_rows(receiver, db):
    secret = signing.generate_secret()

    output = run("webhooks_send_test", "--url", receiver.url, "--secret", secret)

    (request,) = receiver.requests
    signing.verify_standard(secret, request.headers, request.body)
    signing.verify_hex(secret, request.header("X-Webhook-Signature"), request.body)
    assert "< HTTP 200" in output
    assert Event.objects.count() == Delivery.objects.count() == 0


def test_send_test_ad_hoc_unreachable_exits_1(db):
    code, message, output = run_failing(
        "webhooks_send_test", "--url", "http://127.0.0.1:9/nothing", "--secret", "s" * 20
    )

    assert code == 1
    assert "< no response" in output
    assert "the endpoint did not answer 2xx: Connection refused (127.0.0.1:9)" in message


def test_send_test_queue_goes_through_the_workers(
    webhook, receiver, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        output = run("webhooks_send_test", str(webhook.pk), "--queue")

    assert "Queued delivery" in output
    assert len(receiver.wait_for(1)) == 1
    assert Delivery.objects.get().status == DeliveryStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["1", "--url", "http://x.example"], "not both"),
        (["1", "--data", "{nope"], "not valid JSON"),
        (["1", "--event", "nope.never"], "unknown event"),
        (["--url", "http://x.example", "--secret", "s", "--queue"], "--queue needs"),
        (["--url", "http://x.example"], "--url needs --secret"),
        (["--url", "ftp://x.example", "--secret", "s"], "must start with http"),
        (["no-such-hook"], "no webhook with id or name"),
        (["1", "--secret", "s"], "--secret goes with --url"),
    ],
)
def test_send_test_bad_arguments(webhook, args, message):
    code, text, _ = run_failing("webhooks_send_test", *args)

    assert code == 2
    assert message in text


# --- webhooks_retry --------------------------------------------------------------------------


def test_retry_resends_failed_deliveries_with_progress(
    failed, receiver, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        output = run("webhooks_retry", "--since", "1h")

    failed.refresh_from_db()
    assert failed.status == DeliveryStatus.SUCCEEDED
    assert "Retrying [" in output
    assert "1/1 (100%)" in output
    assert "Queued 1 of 1 delivery for another attempt." in output


def test_retry_dry_run_changes_nothing(failed, receiver):
    output = run("webhooks_retry", "--webhook", failed.webhook.name, "--dry-run")

    assert "Would retry 1 delivery (dry run" in output
    assert failed.event_id in output
    assert failed.last_error.startswith("HTTP 500")
    assert f"({failed.last_error})" in output  # each row says why it failed
    failed.refresh_from_db()
    assert failed.attempts == 1
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(
    ("args", "matches"),
    [
        (["--event", "create"], 1),
        (["--event", "delete"], 0),
        (["--since", "2000-01-01", "--until", "2000-01-02"], 0),
        (["--since", "1h", "--status", "pending"], 0),
    ],
)
def test_retry_selection(failed, args, matches):
    output = run("webhooks_retry", *args, "--dry-run")

    noun = "delivery" if matches == 1 else "deliveries"
    assert f"Would retry {matches} {noun} (dry run" in output


def test_retry_by_event_id(failed):
    assert "Would retry 1" in run("webhooks_retry", "--event", failed.event_id, "--dry-run")


def test_retry_rejects_backwards_window(failed):
    code, text, _ = run_failing("webhooks_retry", "--since", "1h", "--until", "2h")

    assert code == 2
    assert "--until must be later" in text


# --- webhooks_prune --------------------------------------------------------------------------


def test_prune_deletes_by_age_and_status(failed, webhook, receiver):
    operations.send_test(webhook)
    old = timezone.now() - datetime.timedelta(days=40)
    succeeded = Delivery.objects.get(status=DeliveryStatus.SUCCEEDED)
    Delivery.objects.update(completed_at=old)
    Event.objects.update(created_at=old)

    dry = run("webhooks_prune", "--dry-run")
    output = run("webhooks_prune", "--batch-size", "1")

    assert "Would delete 1 delivery with" in dry
    assert "Deleted 1 delivery, 1 attempt and 1 event." in output
    assert not Delivery.objects.filter(pk=succeeded.pk).exists()
    assert Delivery.objects.filter(pk=failed.pk).exists()  # failed: kept for 90 days
    assert Event.objects.filter(pk=failed.event_id).exists()

    output = run("webhooks_prune", "--failed-age", "30d")
    assert "Deleted 1 delivery" in output
    assert Event.objects.count() == 0


def test_prune_keeps_events_no_worker_has_fanned_out_yet(webhook):
    ArticleFactory()  # recorded, and (no commit in this test) never picked up
    Event.objects.update(created_at=timezone.now() - datetime.timedelta(days=400))

    output = run("webhooks_prune", "--failed-age", "30d", "--succeeded-age", "30d")

    assert "and 0 events." in output
    assert Event.objects.get().pending_fanout is True


def test_prune_refuses_tiny_ages(db):
    code, text, _ = run_failing("webhooks_prune", "--succeeded-age", "5m")

    assert code == 2
    assert "below 1h" in text


# --- webhooks_status -------------------------------------------------------------------------


@pytest.fixture
def worker_alive(db):
    """What a running cluster leaves: its ticker's lease, renewed a moment ago."""
    renewed = timezone.now() - datetime.timedelta(seconds=1)
    Lease.objects.create(
        name=tasks.TICKER_LEASE,
        owner="a-worker",
        expires_at=renewed + datetime.timedelta(seconds=tasks.ticker_lease_seconds()),
    )


def test_status_healthy_exits_zero(webhook, worker_alive):
    output = run("webhooks_status", "--max-due", "10", "--max-oldest", "5m")

    assert "workers:                alive (seen 1 s ago)" in output
    assert "deliveries due now:     0" in output
    assert "none" in output


def test_status_says_no_worker_was_ever_seen_and_exits_1(webhook):
    code, message, _ = run_failing("webhooks_status")

    assert code == 1
    assert message == "no worker seen (is a qcluster running?)"
    assert run("webhooks_status", "--no-worker-check").startswith("workers:")


def test_status_says_how_long_no_worker_was_seen(webhook):
    stopped = timezone.now() - datetime.timedelta(minutes=2)
    Lease.objects.create(name=tasks.TICKER_LEASE, owner="gone", expires_at=stopped)

    code, message, _ = run_failing("webhooks_status", "--json")

    assert code == 1
    assert "no worker seen for 2 min" in message


def test_status_thresholds_exit_1(failed, webhook, worker_alive):
    Delivery.objects.create(
        event=failed.event,
        webhook=webhook,
        status="pending",
        next_attempt_at=timezone.now() - datetime.timedelta(minutes=10),
    )
    operations.disable(webhook, "410 Gone")

    code, message, output = run_failing(
        "webhooks_status",
        "--max-due",
        "0",
        "--max-oldest",
        "5m",
        "--max-failures",
        "0",
        "--fail-on-disabled",
    )

    assert code == 1
    assert "1 delivery due (max 0)" in message
    assert "waited 600s" in message
    assert "1 failed attempt in the last hour" in message
    assert "is disabled: 410 Gone" in message
    assert f"webhook {webhook.pk} ({webhook}): 410 Gone" in output


def test_status_json(failed, worker_alive):
    output = run("webhooks_status", "--json")

    report = json.loads(output)
    assert report["deliveries_due"] == 0
    assert report["failures_last_hour"] == [
        {"webhook_id": failed.webhook_id, "webhook": str(failed.webhook), "failures": 1}
    ]
    assert report["problems"] == []
    assert report["workers_alive"] is True


# --- webhooks_listen -------------------------------------------------------------------------


class Listener:
    """webhooks_listen in a thread, bounded by --max-requests / --timeout."""

    def __init__(self, *args: str) -> None:
        self.out = io.StringIO()
        self.error: CommandError | None = None
        self.thread = threading.Thread(target=self._run, args=args, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while "Listening on" not in self.out.getvalue():
            assert time.monotonic() < deadline, self.out.getvalue()
            time.sleep(0.02)
        self.url = self.out.getvalue().split("Listening on ")[1].split()[0]

    def _run(self, *args: str) -> None:
        try:
            call_command("webhooks_listen", "--port", "0", *args, stdout=self.out)
        except CommandError as exc:
            self.error = exc

    def join(self) -> str:
        self.thread.join(15)
        assert not self.thread.is_alive()
        return self.out.getvalue()


def test_listen_verifies_a_real_delivery_and_prints_a_diff(db, django_capture_on_commit_callbacks):
    secret = signing.generate_secret()
    listener = Listener("--secret", secret, "--max-requests", "2")
    WebhookFactory(url=listener.url, secret=secret)

    with django_capture_on_commit_callbacks(execute=True):
        article = ArticleFactory(title="Before")
    with django_capture_on_commit_callbacks(execute=True):
        article.title = "After"
        article.save()

    output = listener.join()
    assert listener.error is None, output
    update = Event.objects.get(name="update")
    assert f"{update.id}  update  model=article  standard:ok  hex:ok" in output
    assert '    title: "Before" → "After"' in output
    assert "<- answered 200" in output
    assert Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == 2


def test_listen_answers_the_chosen_status_and_flags_bad_signatures(db, receiver):
    listener = Listener("--secret", "whsec_" + "A" * 43, "--status", "503", "--max-requests", "1")
    hook = WebhookFactory(url=listener.url, retries=0)

    attempt = operations.send_test(hook)

    output = listener.join()
    assert attempt.response_status == 503
    assert "standard:FAILED (no signature matched)" in output
    assert listener.error is not None
    assert listener.error.returncode == 1


def test_listen_forwards_and_stops_on_timeout(db, receiver):
    secret = signing.generate_secret()
    listener = Listener("--secret", secret, "--forward-to", receiver.url, "--timeout", "3")
    hook = WebhookFactory(url=listener.url, secret=secret)

    operations.send_test(hook)

    output = listener.join()
    (forwarded,) = receiver.requests
    signing.verify_standard(secret, forwarded.headers, forwarded.body)
    assert "-> forwarded: HTTP 200" in output
    assert "Stopped after 1 request(s), 0 unverified." in output


def test_listen_rejects_bad_status(db):
    code, text, _ = run_failing("webhooks_listen", "--status", "42")

    assert code == 2
    assert "--status" in text
