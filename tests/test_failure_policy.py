"""The failure policy (failures.py): a webhook that keeps failing is warned about, then
disabled and its owner told; what arrives meanwhile is kept as skipped deliveries and can be
resent on re-enabling. A frozen clock walks through the days; e-mail goes to Django's locmem
backend (pytest-django's ``mailoutbox``)."""

from __future__ import annotations

import datetime
import io

import pytest
import time_machine
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from tests.factories import ArticleFactory, UserFactory, WebhookFactory
from tests.receiver import Response
from webhooks_app import operations, tasks
from webhooks_app.models import Delivery, Webhook
from webhooks_app.signals import webhook_disabled, webhook_failing

pytest_plugins = ["tests.api_support"]
pytestmark = [pytest.mark.django_db, pytest.mark.portable]

START = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
NOTICES: list = []


def record_notice(notice):
    """A WEBHOOKS["NOTIFIER"] for the tests."""
    NOTICES.append(notice)


@pytest.fixture
def policy(settings):
    settings.ADMINS = ["ops@example.com"]
    settings.WEBHOOKS = {
        **settings.WEBHOOKS,
        "DISABLE_AFTER_SECONDS": 5 * 86400,
        "DISABLE_AFTER_FAILURES": 5,
        "DISABLE_WARNING_SHARE": 0.5,
    }
    NOTICES.clear()
    return settings


@pytest.fixture
def signals_sent():
    sent: list[tuple[str, dict]] = []

    def on_failing(sender, **kwargs):
        sent.append(("failing", kwargs))

    def on_disabled(sender, **kwargs):
        sent.append(("disabled", kwargs))

    webhook_failing.connect(on_failing)
    webhook_disabled.connect(on_disabled)
    yield sent
    webhook_failing.disconnect(on_failing)
    webhook_disabled.disconnect(on_disabled)


@pytest.fixture
def failing(receiver, policy):
    """A webhook with an owner whose endpoint answers 500 to everything, no retries (each
    event is one attempt)."""
    receiver.default = Response(500)
    return WebhookFactory(
        url=receiver.url,
        events=["create"],  # not the user.login of the admin tests' own log-in
        retries=0,
        owner=UserFactory(email="dev@example.com"),
    )


def deliver_at(moment: datetime.datetime, events: int = 1) -> None:
    with time_machine.travel(moment, tick=False):
        for _ in range(events):
            ArticleFactory()
        tasks.run()


def test_warned_half_way_then_disabled_with_the_reason_and_everyone_told(
    failing, mailoutbox, signals_sent
):
    deliver_at(START, events=2)
    deliver_at(START + 2 * DAY)  # 40% of the period: nothing yet
    assert mailoutbox == []

    deliver_at(START + 2.5 * DAY)
    deliver_at(START + 3 * DAY)  # warned once per run of failures, not on every failure
    failing.refresh_from_db()
    assert failing.is_active
    assert failing.disable_warned_at == START + 2.5 * DAY
    assert [kind for kind, _ in signals_sent] == ["failing"]
    assert signals_sent[0][1]["disable_at"] == START + 5 * DAY
    (warning,) = mailoutbox
    assert warning.subject == f"Webhook failing: {failing}"
    assert sorted(warning.to) == ["dev@example.com", "ops@example.com"]
    assert "2026-03-07 09:00:00 UTC" in warning.body

    deliver_at(START + 5 * DAY + datetime.timedelta(seconds=1))
    failing.refresh_from_db()
    assert failing.is_active is False
    assert failing.disabled_at == START + 5 * DAY + datetime.timedelta(seconds=1)
    assert failing.disabled_reason.startswith("Disabled automatically on 2026-03-07 09:00:01 UTC")
    assert "every attempt failed for 5 days (6 in a row since 2026-03-02 09:00:00 UTC)" in (
        failing.disabled_reason
    )
    assert failing.disabled_reason.endswith("the last: HTTP 500 (ok).")
    assert [kind for kind, _ in signals_sent] == ["failing", "disabled"]
    assert signals_sent[1][1]["reason"] == failing.disabled_reason
    disabled_mail = mailoutbox[1]
    assert disabled_mail.subject == f"Webhook disabled: {failing}"
    assert failing.disabled_reason in disabled_mail.body
    assert f"webhooks_enable {failing.pk} --resend-skipped" in disabled_mail.body


def test_a_long_period_with_too_few_failures_does_not_disable(failing):
    deliver_at(START)
    deliver_at(START + 6 * DAY)

    failing.refresh_from_db()
    assert failing.is_active
    assert failing.consecutive_failures == 2


def test_a_success_ends_the_run_of_failures(failing, receiver, mailoutbox):
    deliver_at(START, events=3)
    deliver_at(START + 3 * DAY)
    receiver.queue(Response(200))
    deliver_at(START + 4 * DAY)  # one success
    failing.refresh_from_db()
    assert failing.failing_since is None
    assert failing.disable_warned_at is None

    deliver_at(START + 5.5 * DAY, events=5)  # failing again, but only since today

    failing.refresh_from_db()
    assert failing.is_active
    assert failing.failing_since == START + 5.5 * DAY
    assert [mail.subject.split(":")[0] for mail in mailoutbox] == ["Webhook failing"]


@pytest.mark.parametrize(
    ("own_seconds", "settings_seconds", "disabled"),
    [
        (None, None, False),  # off in settings
        (0, 5 * 86400, False),  # off for this webhook
        (3600, None, True),  # on for this webhook only, after an hour
    ],
)
def test_the_period_comes_from_the_webhook_or_the_settings(
    failing, policy, own_seconds, settings_seconds, disabled
):
    policy.WEBHOOKS = {**policy.WEBHOOKS, "DISABLE_AFTER_SECONDS": settings_seconds}
    Webhook.objects.filter(pk=failing.pk).update(disable_after_seconds=own_seconds)

    deliver_at(START, events=5)
    deliver_at(START + 30 * DAY)

    failing.refresh_from_db()
    assert failing.is_active is not disabled


def test_test_sends_do_not_count(failing):
    for day in range(7):
        with time_machine.travel(START + day * DAY, tick=False):
            operations.send_test(failing)

    failing.refresh_from_db()
    assert failing.is_active
    assert failing.failing_since is None


def test_a_notifier_replaces_the_mail_and_notify_chooses_the_recipients(
    failing, policy, mailoutbox
):
    policy.WEBHOOKS = {**policy.WEBHOOKS, "NOTIFY": ["admins"]}
    deliver_at(START)
    deliver_at(START + 3 * DAY)
    assert [mail.to for mail in mailoutbox] == [["ops@example.com"]]

    policy.WEBHOOKS = {**policy.WEBHOOKS, "NOTIFIER": "tests.test_failure_policy.record_notice"}
    deliver_at(START + 6 * DAY, events=4)

    assert len(mailoutbox) == 1
    (notice,) = NOTICES
    assert notice.kind == "disabled"
    assert notice.webhook.pk == failing.pk
    assert notice.recipients == ["ops@example.com"]


def test_a_broken_mail_server_does_not_stop_the_worker(failing, policy, settings):
    settings.EMAIL_BACKEND = "tests.test_failure_policy.BrokenBackend"
    deliver_at(START, events=5)

    deliver_at(START + 6 * DAY)

    failing.refresh_from_db()
    assert failing.is_active is False
    assert Delivery.objects.filter(status="failed").count() == 6


class BrokenBackend:
    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        raise ConnectionRefusedError("no mail server")


@pytest.fixture
def disabled(failing, receiver):
    """The failing webhook, disabled by the policy; then two events arrive while it is, and
    the endpoint is fixed."""
    deliver_at(START, events=5)
    deliver_at(START + 6 * DAY)
    deliver_at(START + 7 * DAY, events=2)
    receiver.default = Response(200)
    receiver.requests.clear()
    failing.refresh_from_db()
    assert not failing.is_active
    return failing


def test_events_while_disabled_are_kept_as_skipped_deliveries_with_the_reason(disabled, receiver):
    skipped = Delivery.objects.filter(webhook=disabled, status="skipped")

    assert skipped.count() == 2
    assert all(row.last_error == f"Skipped: {disabled.disabled_reason}"[:500] for row in skipped)
    assert receiver.requests == []


def test_reenabling_through_the_api_resends_what_was_skipped(disabled, receiver, staff_client):
    response = staff_client.post(
        f"/api/webhooks/{disabled.pk}/enable/", {"resend_skipped": True}, format="json"
    )
    tasks.run()

    assert response.status_code == 200
    assert response.json() == {"queued": 2}
    assert len(receiver.requests) == 2
    disabled.refresh_from_db()
    assert disabled.is_active
    assert disabled.disabled_reason == ""
    assert disabled.consecutive_failures == 0
    assert Delivery.objects.filter(status="skipped").count() == 0


def test_reenabling_without_resend_leaves_the_skipped_alone(disabled, staff_client):
    response = staff_client.post(f"/api/webhooks/{disabled.pk}/enable/", {}, format="json")
    bad = staff_client.post(
        f"/api/webhooks/{disabled.pk}/enable/", {"resend_skipped": "maybe"}, format="json"
    )

    assert response.json() == {"queued": 0}
    assert Delivery.objects.filter(status="skipped").count() == 2
    assert bad.status_code == 400
    assert "resend_skipped" in bad.json()


def test_reenabling_with_the_command_resends_what_was_skipped(disabled, receiver):
    out = io.StringIO()
    call_command("webhooks_enable", str(disabled.pk), "--resend-skipped", stdout=out)
    tasks.run()

    assert f"Webhook {disabled.pk} ({disabled}) is enabled again." in out.getvalue()
    assert "Queued 2 skipped deliveries to send again." in out.getvalue()
    assert len(receiver.requests) == 2


def test_reenabling_in_the_admin_resends_what_was_skipped(disabled, receiver, admin_client):
    response = admin_client.post(
        reverse("admin:webhooks_app_webhook_changelist"),
        {"action": "enable_and_resend", "_selected_action": [disabled.pk]},
        follow=True,
    )
    tasks.run()

    assert "queued 2 skipped deliveries to send again" in response.content.decode()
    assert len(receiver.requests) == 2


def test_a_successful_test_of_a_disabled_webhook_says_how_to_reenable_it(
    disabled, staff_client, admin_client
):
    api = staff_client.post(f"/api/webhooks/{disabled.pk}/test/", {}, format="json").json()
    out = io.StringIO()
    call_command("webhooks_send_test", str(disabled.pk), stdout=out)
    page = admin_client.post(
        reverse("admin:webhooks_app_webhook_send_test", args=[disabled.pk]), follow=True
    )

    assert api["status_code"] == 200
    assert "this webhook is disabled" in api["hint"]
    assert f"webhooks_enable {disabled.pk} --resend-skipped" in api["hint"]
    assert f"webhooks_enable {disabled.pk} --resend-skipped" in out.getvalue()
    assert "Re-enable and resend skipped" in page.content.decode()


def test_an_active_webhooks_test_has_no_hint(staff_client, receiver, policy):
    hook = WebhookFactory(url=receiver.url)

    api = staff_client.post(f"/api/webhooks/{hook.pk}/test/", {}, format="json").json()

    assert api["hint"] == ""


def test_reenabling_clears_the_reason_and_the_run_of_failures(disabled):
    before = timezone.now()
    operations.enable(disabled)

    disabled.refresh_from_db()
    assert (disabled.disabled_at, disabled.disabled_reason) == (None, "")
    assert (disabled.failing_since, disabled.disable_warned_at) == (None, None)
    assert disabled.updated_at >= before


def test_a_settings_endpoint_disabled_by_a_410_keeps_skipped_deliveries_and_can_be_enabled(
    receiver, policy
):
    from webhooks_app import sync

    policy.WEBHOOKS = {
        **policy.WEBHOOKS,
        "ENDPOINTS": [{"name": "declared", "url": receiver.url, "secret": "s" * 32}],
    }
    sync.sync_endpoints()
    declared = Webhook.objects.get(managed_by_settings=True)
    receiver.queue(Response(410))
    ArticleFactory()
    tasks.run()
    declared.refresh_from_db()
    assert not declared.is_active

    ArticleFactory()  # while it is disabled: kept, skipped
    tasks.run()
    queued = operations.enable(declared, resend_skipped=True)
    tasks.run()

    assert queued == 1
    assert len(receiver.requests) == 2  # the 410, then the resent one
    assert Delivery.objects.filter(webhook=declared, status="succeeded").count() == 1


def test_an_endpoint_declared_inactive_in_settings_is_enabled_only_there(policy):
    from webhooks_app import sync

    policy.WEBHOOKS = {
        **policy.WEBHOOKS,
        "ENDPOINTS": [
            {"name": "off", "url": "https://off.example.com/", "secret": "s" * 32, "active": False}
        ],
    }
    sync.sync_endpoints()
    declared = Webhook.objects.get(managed_by_settings=True)
    ArticleFactory()
    tasks.run()

    with pytest.raises(operations.OperationError, match="enable it there"):
        operations.enable(declared)
    assert not Delivery.objects.exists()  # declared off: nothing, not even skipped


def test_a_rolled_back_write_tells_nobody_and_the_next_one_tells_once(
    receiver, policy, mailoutbox, signals_sent
):
    from django.db import transaction

    from webhooks_app import delivery, http

    hook = WebhookFactory(url=receiver.url, owner=UserFactory(email="dev@example.com"))
    ArticleFactory()
    tasks.run()  # fan out and deliver once (200), so there is a row to re-use
    row = Delivery.objects.get()
    recorder = delivery.Recorder(row.lease_token)
    gone = http.AttemptResult(started_at=timezone.now(), duration_ms=5, status_code=410)
    request = delivery.build_request(hook, row.event_id, b"{}")

    recorder.add_result(row, hook, request, gone)

    def claim_that_fails_after_writing() -> None:
        with transaction.atomic():
            recorder.write()
            raise RuntimeError("the claim failed after writing the outcomes")

    with pytest.raises(RuntimeError):
        claim_that_fails_after_writing()
    recorder.announce()  # as a run does after each claim: nothing was committed
    hook.refresh_from_db()
    assert hook.is_active
    assert signals_sent == []
    assert mailoutbox == []

    recorder.flush()  # written again, for real this time

    hook.refresh_from_db()
    assert not hook.is_active
    assert [kind for kind, _ in signals_sent] == ["disabled"]
    assert len(mailoutbox) == 1


def test_turning_is_active_on_through_the_api_is_enabling(disabled, staff_client):
    response = staff_client.patch(
        f"/api/webhooks/{disabled.pk}/", {"is_active": True}, format="json"
    )
    off = staff_client.patch(f"/api/webhooks/{disabled.pk}/", {"is_active": False}, format="json")

    assert response.status_code == 200
    assert response.json()["disabled_reason"] == ""
    assert response.json()["consecutive_failures"] == 0
    assert off.json()["disabled_reason"].startswith("Disabled by ")
    assert off.json()["disabled_reason"].endswith(" through the API.")
    assert off.json()["disabled_at"] is not None
