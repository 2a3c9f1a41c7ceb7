"""The admin operators use: every page, every action and button, and who may press them."""

from __future__ import annotations

import datetime
import re

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from tests.factories import ArticleFactory, UserFactory, WebhookFactory
from tests.fake_dns import fake_resolve
from tests.receiver import Response
from webhooks_app import signing, tasks
from webhooks_app.models import Delivery, DeliveryAttempt, DeliveryStatus, Event, Lease, Webhook

pytestmark = pytest.mark.django_db

VIEW_PERMS = ["view_webhook", "view_delivery", "view_event"]


def staff(*codenames: str):
    user = UserFactory(is_staff=True)
    user.save()  # the factory's set_password is not saved; force_login hashes the stored one
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="webhooks_app", codename__in=codenames)
    )
    return user


@pytest.fixture
def client_for(client):
    def login(*codenames: str):
        client.force_login(staff(*VIEW_PERMS, *codenames))
        return client

    return login


@pytest.fixture
def failed(webhook, receiver, django_capture_on_commit_callbacks):
    """A delivery that failed once with a 500 and has no retries left."""
    webhook.retries = 0
    webhook.headers = {"Authorization": "Bearer top-secret-token"}
    webhook.save()
    receiver.queue(Response(500, b'{"error": "boom"}', {"X-Trace": "abc"}))
    with django_capture_on_commit_callbacks(execute=True):
        ArticleFactory(title="Seen in the admin")
    row = Delivery.objects.get()
    assert row.status == DeliveryStatus.FAILED
    return row


def url(name: str, *args) -> str:
    return reverse(f"admin:webhooks_app_{name}", args=args)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


# --- pages open ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["webhook", "delivery", "event", "deliveryhealth"])
def test_changelists_open(admin_client, failed, model):
    response = admin_client.get(url(f"{model}_changelist"))

    assert response.status_code == 200


def test_index_links_the_health_page(admin_client):
    response = admin_client.get(reverse("admin:index"))

    assert url("deliveryhealth_changelist") in response.content.decode()


def test_index_warns_when_deliveries_are_due_and_no_worker_is_alive(admin_client, webhook):
    quiet = admin_client.get(reverse("admin:index")).content.decode()
    Delivery.objects.create(
        event=Event.objects.create(name="create", model="article", body="{}"),
        webhook=webhook,
        status="pending",
        next_attempt_at=timezone.now() - datetime.timedelta(seconds=46),
    )
    down = admin_client.get(reverse("admin:index")).content.decode()
    # The webhooks pages warn too, whatever the order of INSTALLED_APPS (check W005).
    pages_down = [
        admin_client.get(page).content.decode()
        for page in (
            reverse("admin:app_list", args=["webhooks_app"]),
            url("webhook_changelist"),
            url("webhook_change", webhook.pk),
            url("delivery_changelist"),
            url("deliveryhealth_changelist"),
        )
    ]
    Lease.objects.create(
        name=tasks.TICKER_LEASE,
        owner="a-worker",
        expires_at=timezone.now() + datetime.timedelta(seconds=4),
    )
    alive = admin_client.get(reverse("admin:index")).content.decode()
    health = admin_client.get(url("deliveryhealth_changelist")).content.decode()

    assert "webhooks-workers-down" not in quiet  # nothing due: nothing to warn about
    assert "webhooks-workers-down" in down
    assert all(page.count('id="webhooks-workers-down"') == 1 for page in pages_down)
    assert "no worker seen (is a qcluster running?)" in down
    assert "webhooks-workers-down" not in alive
    assert "alive (seen 1 s ago)" in health


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status__exact=failed", 1),
        ("status__exact=succeeded", 0),
        ("event_name=create", 1),
        ("event_name=delete", 0),
        ("model=article", 1),
        ("model=invoice", 0),
        ("code=5xx", 1),
        ("code=2xx", 0),
        ("code=none", 0),
        ("created_at__gte=2000-01-01T00:00:00Z", 1),
    ],
)
def test_delivery_filters(admin_client, failed, query, expected):
    response = admin_client.get(url("delivery_changelist") + "?" + query)

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == expected


def test_delivery_filter_by_webhook_and_no_response(admin_client, failed):
    other = WebhookFactory()
    Delivery.objects.create(
        event=failed.event, webhook=other, status="failed", attempts=1, last_error="refused"
    )

    by_hook = admin_client.get(url("delivery_changelist") + f"?webhook__id__exact={other.pk}")
    no_response = admin_client.get(url("delivery_changelist") + "?code=none")

    assert [d.webhook_id for d in by_hook.context["cl"].result_list] == [other.pk]
    assert [d.webhook_id for d in no_response.context["cl"].result_list] == [other.pk]


@pytest.mark.parametrize("term", ["event_id", "object_id", "url"])
def test_delivery_search(admin_client, failed, term):
    value = {
        "event_id": failed.event_id,
        "object_id": failed.event.object_id,
        "url": failed.webhook.url.split("//")[1][:12],
    }[term]

    hit = admin_client.get(url("delivery_changelist"), {"q": value})
    miss = admin_client.get(url("delivery_changelist"), {"q": "evt_nothing"})

    assert list(hit.context["cl"].result_list) == [failed]
    assert list(miss.context["cl"].result_list) == []


def test_delivery_list_marks_failures_and_does_not_grow_queries(
    admin_client, failed, django_assert_max_num_queries
):
    for _ in range(30):
        Delivery.objects.create(event=failed.event, webhook=failed.webhook, status="failed")

    with django_assert_max_num_queries(12):
        response = admin_client.get(url("delivery_changelist"))

    assert "webhooks-status-failed" in response.content.decode()


def test_lists_never_count_the_whole_table(admin_client, failed, monkeypatch):
    monkeypatch.setattr("webhooks_app.admin.common.COUNT_CAP", 0)
    monkeypatch.setattr("webhooks_app.admin.common.CappedCountPaginator.cap", 0)

    response = admin_client.get(url("delivery_changelist"))

    assert "more than 0 deliveries" in response.content.decode()


# --- delivery detail and retry ---------------------------------------------------------------


def test_delivery_page_shows_each_attempt_without_secrets(admin_client, failed, webhook):
    response = admin_client.get(url("delivery_change", failed.pk))

    content = response.content.decode()
    assert response.status_code == 200
    assert "webhook-signature" in content
    assert "HTTP 500" in content
    assert "X-Trace" in content
    assert "boom" in content
    assert "[redacted]" in content
    assert "top-secret-token" not in content
    assert webhook.secret not in content
    assert "Retry now" in content


def test_retry_now_succeeds(admin_client, failed, receiver, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url("delivery_retry", failed.pk), follow=True)

    failed.refresh_from_db()
    assert failed.status == DeliveryStatus.SUCCEEDED
    assert "Queued 1 delivery" in messages_of(response)[0]


def test_read_only_staff_sees_but_cannot_retry(client_for, failed):
    client = client_for()

    page = client.get(url("delivery_change", failed.pk))
    post = client.post(url("delivery_retry", failed.pk))
    action = client.post(
        url("delivery_changelist"), {"action": "retry_selected", "_selected_action": [failed.pk]}
    )

    assert page.status_code == 200
    assert "Retry now" not in page.content.decode()
    assert post.status_code == 403
    assert action.status_code == 200  # "no action selected": the action is not offered
    failed.refresh_from_db()
    assert failed.status == DeliveryStatus.FAILED
    assert failed.attempts == 1


def test_retry_permission_alone_allows_retry(
    client_for, failed, django_capture_on_commit_callbacks
):
    client = client_for("retry_delivery")

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            url("delivery_changelist"),
            {"action": "retry_selected", "_selected_action": [failed.pk]},
            follow=True,
        )

    assert "Queued 1 delivery for another attempt." in messages_of(response)
    failed.refresh_from_db()
    assert failed.status == DeliveryStatus.SUCCEEDED


def test_retry_selected_leaves_in_flight_rows_and_says_so(admin_client, failed):
    busy = Delivery.objects.create(
        event=failed.event,
        webhook=failed.webhook,
        status="pending",
        lease_token="x" * 32,
        next_attempt_at=timezone.now() + datetime.timedelta(seconds=45),
    )

    response = admin_client.post(
        url("delivery_changelist"),
        {"action": "retry_selected", "_selected_action": [failed.pk, busy.pk]},
        follow=True,
    )

    assert messages_of(response) == [
        "Queued 1 delivery for another attempt. 1 in flight right now was left alone."
    ]


# --- webhooks --------------------------------------------------------------------------------


def test_webhook_list_shows_health(admin_client, failed, django_assert_max_num_queries):
    operations_disable = WebhookFactory(is_active=False, disabled_reason="410 Gone")
    for _ in range(5):
        WebhookFactory()

    with django_assert_max_num_queries(10):
        response = admin_client.get(url("webhook_changelist"))

    content = response.content.decode()
    assert "0% of 1" in content
    assert operations_disable.disabled_reason in content
    assert "webhooks-status-failed" in content


def test_webhook_page_masks_the_secret_and_lists_recent_deliveries(admin_client, failed, webhook):
    response = admin_client.get(url("webhook_change", webhook.pk))

    content = response.content.decode()
    assert webhook.secret not in content
    assert signing.mask_secret(webhook.secret) in content
    assert 'id="webhooks-recent"' in content
    assert url("delivery_change", failed.pk) in content
    for button in ("Send test event", "Rotate secret", "Recover failed deliveries"):
        assert button in content


def test_managed_webhook_is_read_only(admin_client):
    managed = WebhookFactory(
        managed_by_settings=True,
        settings_key="k",
        settings_declaration={"url": "https://x.example", "secret": "whsec_" + "A" * 40},
    )

    response = admin_client.get(url("webhook_change", managed.pk))

    content = response.content.decode()
    assert response.status_code == 200
    assert 'name="url"' not in content
    assert "Declared in settings" in content
    assert "A" * 40 not in content
    assert "Rotate secret" not in content
    assert 'name="_save"' not in content  # nothing here can be saved
    assert 'name="_continue"' not in content


def test_send_test_action_reports_the_result(admin_client, webhook, receiver):
    receiver.queue(Response(503))

    response = admin_client.post(
        url("webhook_changelist"),
        {"action": "send_test_event", "_selected_action": [webhook.pk]},
        follow=True,
    )
    button = admin_client.post(url("webhook_send_test", webhook.pk), follow=True)

    assert "HTTP 503" in messages_of(response)[0]
    assert "HTTP 200" in messages_of(button)[0]
    assert len(receiver.requests) == 2


def test_enable_and_disable_actions(admin_client, webhook):
    admin_client.post(
        url("webhook_changelist"), {"action": "disable", "_selected_action": [webhook.pk]}
    )
    webhook.refresh_from_db()
    assert not webhook.is_active
    assert "in the admin" in webhook.disabled_reason

    admin_client.post(
        url("webhook_changelist"), {"action": "enable", "_selected_action": [webhook.pk]}
    )
    webhook.refresh_from_db()
    assert webhook.is_active


def test_rotate_shows_the_new_secret_once(admin_client, webhook):
    old = webhook.secret
    confirm = admin_client.post(
        url("webhook_changelist"), {"action": "rotate_secret", "_selected_action": [webhook.pk]}
    )
    done = admin_client.post(
        url("webhook_changelist"),
        {
            "action": "rotate_secret",
            "_selected_action": [webhook.pk],
            "grace": "3600",
            "apply": "1",
        },
    )

    webhook.refresh_from_db()
    assert "Old secret keeps signing for" in confirm.content.decode()
    assert webhook.secret != old
    assert webhook.secret in done.content.decode()
    assert "no-store" in done["Cache-Control"]
    assert webhook.previous_secret == old
    assert (
        webhook.secret not in admin_client.get(url("webhook_change", webhook.pk)).content.decode()
    )


def test_rotate_button_page(admin_client, webhook):
    page = admin_client.get(url("webhook_rotate", webhook.pk))
    done = admin_client.post(url("webhook_rotate", webhook.pk), {"grace": "0", "apply": "1"})

    webhook.refresh_from_db()
    assert page.status_code == 200
    assert webhook.secret in done.content.decode()


def test_recover_asks_for_a_time_then_resends(
    admin_client, failed, receiver, django_capture_on_commit_callbacks
):
    webhook = failed.webhook
    form = admin_client.post(
        url("webhook_changelist"), {"action": "recover_failed", "_selected_action": [webhook.pk]}
    )
    since = (timezone.now() - datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            url("webhook_changelist"),
            {
                "action": "recover_failed",
                "_selected_action": [webhook.pk],
                "since": since,
                "apply": "1",
            },
            follow=True,
        )

    assert 'name="since"' in form.content.decode()
    assert "Queued 1 failed delivery" in messages_of(response)[0]
    failed.refresh_from_db()
    assert failed.status == DeliveryStatus.SUCCEEDED


def test_recover_button_rejects_a_backwards_window(admin_client, failed):
    response = admin_client.post(
        url("webhook_recover", failed.webhook_id),
        {"since": "2030-01-02T00:00", "until": "2030-01-01T00:00", "apply": "1"},
    )

    assert response.status_code == 200
    assert "later than" in response.content.decode()


@pytest.mark.parametrize(
    ("perm", "allowed_action", "view"),
    [
        ("test_webhook", "send_test_event", "webhook_send_test"),
        ("rotate_webhook_secret", "rotate_secret", "webhook_rotate"),
        ("recover_webhook", "recover_failed", "webhook_recover"),
    ],
)
def test_each_resend_permission_unlocks_only_its_own_action(
    client_for, webhook, perm, allowed_action, view
):
    client = client_for(perm)

    response = client.get(url("webhook_changelist"))
    actions = {value for value, _ in response.context["action_form"].fields["action"].choices}

    assert allowed_action in actions
    others = {"send_test_event", "rotate_secret", "recover_failed"} - {allowed_action}
    assert not actions & others
    assert not actions & {"enable", "disable"}  # needs change_webhook
    forbidden = {"webhook_send_test", "webhook_rotate", "webhook_recover"} - {view}
    for name in forbidden:
        assert client.post(url(name, webhook.pk)).status_code == 403


def test_read_only_staff_cannot_send_or_rotate(client_for, webhook, receiver):
    client = client_for()
    old = webhook.secret

    page = client.get(url("webhook_change", webhook.pk)).content.decode()
    for name in ("webhook_send_test", "webhook_rotate", "webhook_recover"):
        assert client.post(url(name, webhook.pk), {"apply": "1", "grace": "0"}).status_code == 403
    client.post(
        url("webhook_changelist"),
        {"action": "rotate_secret", "_selected_action": [webhook.pk], "grace": "0", "apply": "1"},
    )

    assert "Send test event" not in page
    assert receiver.requests == []
    webhook.refresh_from_db()
    assert webhook.secret == old


# --- events ----------------------------------------------------------------------------------


@pytest.fixture
def updated_event(webhook, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        article = ArticleFactory(title="Before")
        article.title = "After <b>"
        article.save()
    return Event.objects.get(name="update")


def test_event_page_shows_a_side_by_side_diff(admin_client, updated_event):
    response = admin_client.get(url("event_change", updated_event.pk))

    content = response.content.decode()
    assert 'id="webhooks-diff"' in content
    assert '<tr class="changed"' in content
    assert "After &lt;b&gt;" in content  # escaped
    assert "<b>" not in content.split('id="webhooks-diff"')[1].split("</table>")[0]
    assert url("delivery_change", updated_event.deliveries.get().pk) in content


def test_event_filters_and_exact_search(admin_client, updated_event):
    by_name = admin_client.get(url("event_changelist"), {"name": "update"})
    by_object = admin_client.get(url("event_changelist"), {"q": updated_event.object_id})
    by_id = admin_client.get(url("event_changelist"), {"q": updated_event.pk})

    assert list(by_name.context["cl"].result_list) == [updated_event]
    assert updated_event in by_object.context["cl"].result_list
    assert list(by_id.context["cl"].result_list) == [updated_event]


def test_redeliver_event(admin_client, updated_event, receiver, django_capture_on_commit_callbacks):
    WebhookFactory(url=receiver.url)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            url("event_changelist"),
            {"action": "redeliver", "_selected_action": [updated_event.pk]},
            follow=True,
        )
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(url("event_redeliver", updated_event.pk))

    assert "Queued 2 new deliveries of 1 event(s)." in messages_of(response)
    assert updated_event.deliveries.count() == 5


def test_read_only_staff_cannot_redeliver(client_for, updated_event):
    client = client_for()

    page = client.get(url("event_change", updated_event.pk)).content.decode()

    assert "Redeliver to all subscribed webhooks" not in page
    assert client.post(url("event_redeliver", updated_event.pk)).status_code == 403
    assert updated_event.deliveries.count() == 1


# --- health ----------------------------------------------------------------------------------


def test_health_page(client_for, failed):
    Webhook.objects.create(url="https://gone.example", is_active=False, disabled_reason="410")
    client = client_for()

    day = client.get(url("deliveryhealth_changelist"))
    week = client.get(url("deliveryhealth_changelist"), {"window": "7d"})

    content = day.content.decode()
    assert day.status_code == week.status_code == 200
    assert "<svg" in content
    assert "<polyline" in content or "<circle" in content
    assert "webhooks-status-failed" in content
    assert "410" in content
    assert str(failed.webhook) in content


def test_health_needs_delivery_view_permission(client):
    client.force_login(staff("view_webhook"))

    assert client.get(url("deliveryhealth_changelist")).status_code == 403
    assert (
        url("deliveryhealth_changelist") not in client.get(reverse("admin:index")).content.decode()
    )


def test_delivery_list_sorts_only_by_indexed_columns(admin_client, failed):
    response = admin_client.get(url("delivery_changelist"))

    assert response.context["cl"].sortable_by == ["id", "created_at"]


def test_header_credentials_are_redacted_for_view_only_staff(client, db):
    from django.contrib.auth.models import Permission

    from tests.factories import UserFactory, WebhookFactory

    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_webhook"))
    hook = WebhookFactory(headers={"Authorization": "Bearer s3cr3t", "X-Tenant": "acme"})
    client.force_login(viewer)

    response = client.get(reverse("admin:webhooks_app_webhook_change", args=[hook.pk]))

    content = response.content.decode()
    assert response.status_code == 200
    assert "s3cr3t" not in content
    assert "acme" in content


def test_admin_form_refuses_headers_that_would_break_sending(admin_client, db):
    from tests.factories import WebhookFactory

    hook = WebhookFactory()
    response = admin_client.post(
        reverse("admin:webhooks_app_webhook_change", args=[hook.pk]),
        {
            "name": hook.name,
            "url": "https://hooks.example.com/",
            "is_active": "on",
            "method": "POST",
            "headers_name": ["X-A"],
            "headers_value": ["a\r\nInjected: 1"],
            "timeout": "",
            "retries": "",
            "signature_header": "",
            "signature_prefix": "",
        },
    )

    assert response.status_code == 200
    assert "CR or LF" in response.content.decode()
    hook.refresh_from_db()
    assert hook.headers == {}


def test_response_credentials_are_not_stored(webhook, receiver, django_capture_on_commit_callbacks):
    from tests.receiver import Response
    from webhooks_app.models import DeliveryAttempt

    receiver.queue(Response(200, headers={"Set-Cookie": "session=abc123"}))
    with django_capture_on_commit_callbacks(execute=True):
        ArticleFactory()

    assert DeliveryAttempt.objects.get().response_headers["Set-Cookie"] == "[redacted]"


def test_adding_a_webhook_shows_its_secret_once_on_a_page_never_cached(admin_client, monkeypatch):
    monkeypatch.setattr("webhooks_app.targets.resolve", fake_resolve)  # no real DNS
    response = admin_client.post(url("webhook_add"), add_form_data())
    webhook = Webhook.objects.get()
    page = response.content.decode()
    change_page = admin_client.get(url("webhook_change", webhook.pk)).content.decode()

    assert response.status_code == 200, page
    assert "no-store" in response["Cache-Control"]
    assert f'<code id="webhooks-new-secret" class="webhooks-secret">{webhook.secret}</code>' in page
    assert "webhooks-copy-secret" in page
    assert webhook.secret not in change_page  # masked from now on


def test_a_delivery_waiting_for_its_retry_says_retrying_and_when(admin_client, webhook):
    event = Event.objects.create(name="create", model="article", body="{}")
    due = timezone.now().replace(microsecond=0) + datetime.timedelta(seconds=4)
    Delivery.objects.create(
        event=event, webhook=webhook, status="pending", attempts=1, next_attempt_at=due
    )
    Delivery.objects.create(
        event=event, webhook=webhook, status="pending", attempts=0, next_attempt_at=due
    )
    Delivery.objects.update(created_at=timezone.now() - datetime.timedelta(seconds=30))

    content = admin_client.get(url("delivery_changelist")).content.decode()

    assert content.count("Retrying</span>") == 1
    assert "next attempt <time" in content
    assert f'title="{due:%Y-%m-%d %H:%M:%S} UTC">in ' in content
    assert "… Pending</span>" in content  # the first attempt still to come
    assert " ago</time>" in content  # created, relative, exact on hover


def add_form_data(**changes):
    data = {
        "name": "CRM",
        "url": "https://crm.example.com/hook",
        "is_active": "on",
        "method": "POST",
        "headers_name": ["", ""],
        "headers_value": ["", ""],
    }
    data.update(changes)
    return data


def test_the_form_offers_the_catalogue_wildcards_and_watched_models(admin_client):
    page = admin_client.get(url("webhook_add")).content.decode()

    for value in ("*", "user.*", "create", "update", "backup.complete", "user.login"):
        assert f'type="checkbox" name="events" value="{value}"' in page
    for model in ("article", "account", "invoice", "user"):
        assert f'type="checkbox" name="models" value="{model}"' in page
    assert 'name="headers_name"' in page
    assert "Enter a valid JSON" not in page


def test_the_form_saves_choices_and_header_rows(admin_client, monkeypatch):
    monkeypatch.setattr("webhooks_app.targets.resolve", fake_resolve)
    data = add_form_data(
        events=["create", "user.*"],
        models=["article"],
        headers_name=["X-Tenant", "", ""],
        headers_value=["acme", "", ""],
    )

    response = admin_client.post(url("webhook_add"), data)

    assert response.status_code == 200
    webhook = Webhook.objects.get()
    assert webhook.events == ["create", "user.*"]
    assert webhook.models == ["article"]
    assert webhook.headers == {"X-Tenant": "acme"}


def test_the_form_refuses_a_protected_header_with_the_apis_message(
    admin_client, monkeypatch, staff_api_client
):
    monkeypatch.setattr("webhooks_app.targets.resolve", fake_resolve)
    data = add_form_data(headers_name=["webhook-id"], headers_value=["x"])
    api = staff_api_client.post(
        "/api/webhooks/",
        {"url": "https://crm.example.com/hook", "headers": {"webhook-id": "x"}},
        format="json",
    ).json()

    response = admin_client.post(url("webhook_add"), data)

    assert not Webhook.objects.exists()
    assert api["headers"][0] in response.content.decode().replace("&#x27;", "'")


def test_a_credential_header_is_shown_redacted_and_kept_when_saved_unchanged(
    admin_client, monkeypatch
):
    monkeypatch.setattr("webhooks_app.targets.resolve", fake_resolve)
    hook = WebhookFactory(
        url="https://crm.example.com/hook",
        events=["custom.thing.*"],
        headers={"Authorization": "Bearer s3cret", "X-Tenant": "acme"},
    )
    page = admin_client.get(url("webhook_change", hook.pk)).content.decode()
    assert "s3cret" not in page
    assert 'value="[redacted]"' in page
    assert re.search(r'value="custom\.thing\.\*"[^>]*checked', page)  # made elsewhere, kept

    admin_client.post(
        url("webhook_change", hook.pk),
        add_form_data(
            url=hook.url,
            events=["custom.thing.*"],
            headers_name=["Authorization", "X-Tenant"],
            headers_value=["[redacted]", "acme2"],
        ),
    )

    hook.refresh_from_db()
    assert hook.headers == {"Authorization": "Bearer s3cret", "X-Tenant": "acme2"}


@pytest.fixture
def staff_api_client(db):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(UserFactory(is_staff=True, is_superuser=True))
    return client


def record_attempts(webhook, rows, started_at):
    """DeliveryAttempt rows of ``webhook`` as the engine writes them: (outcome, duration)."""
    event = Event.objects.create(name="create", model="article", body="{}")
    delivery = Delivery.objects.create(event=event, webhook=webhook, status="pending")
    DeliveryAttempt.objects.bulk_create(
        DeliveryAttempt(
            delivery=delivery,
            webhook=webhook,
            number=number,
            trigger="automatic",
            outcome=outcome,
            started_at=started_at,
            duration_ms=duration,
            request_method="POST",
            request_url=webhook.url,
        )
        for number, (outcome, duration) in enumerate(rows, start=1)
    )


def test_the_webhook_page_charts_its_attempts_by_outcome_and_latency(admin_client, webhook):
    from webhooks_app import stats

    now = timezone.now()
    rows = [("succeeded", 100)] * 18 + [("succeeded", 900)] * 2 + [("failed", 5000)]
    rows += [("retrying", 30), ("disabled", 40)]  # a disabling attempt failed too
    record_attempts(webhook, rows, now - datetime.timedelta(hours=2))
    record_attempts(WebhookFactory(), [("failed", 10)], now - datetime.timedelta(hours=2))

    buckets = stats.webhook_activity(
        webhook.pk, now - datetime.timedelta(hours=24), now, datetime.timedelta(hours=1)
    )
    page = admin_client.get(url("webhook_change", webhook.pk)).content.decode()
    week = admin_client.get(url("webhook_change", webhook.pk) + "?window=7d").content.decode()

    (busy,) = [b for b in buckets if b.succeeded]
    assert (busy.succeeded, busy.failed, busy.retrying) == (20, 2, 1)  # not the other webhook's
    assert (busy.p50_ms, busy.p95_ms) == (100, 900)
    assert len(buckets) == 24
    assert 'id="webhooks-activity-chart"' in page
    assert page.count('class="webhooks-bar-succeeded"') == 1
    assert page.count('class="webhooks-bar-retrying"') == 1
    assert 'id="webhooks-latency-p95"' in page
    assert "Attempts and latency, last 7d" in week


def test_the_activity_percentiles_are_exact_and_each_bucket_holds_only_its_own_attempts(webhook):
    from webhooks_app import stats

    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    since = now - datetime.timedelta(hours=2)
    first_hour = [("succeeded", duration) for duration in range(1, 201) if duration != 7]
    record_attempts(webhook, first_hour, since + datetime.timedelta(minutes=59))
    # Started exactly when the second hour begins: a boundary belongs to the bucket it opens.
    record_attempts(webhook, [("succeeded", 7)] * 41, now - datetime.timedelta(hours=1))

    first, second = stats.webhook_activity(webhook.pk, since, now, datetime.timedelta(hours=1))

    ranked = sorted(duration for _, duration in first_hour)
    assert first.succeeded == len(ranked) == 199
    assert first.p50_ms == ranked[round(0.5 * 198)]
    assert first.p95_ms == ranked[round(0.95 * 198)]
    assert (second.succeeded, second.p50_ms, second.p95_ms) == (41, 7, 7)


def test_the_admin_has_no_inline_styles_and_its_legends_match_the_charts():
    from pathlib import Path

    from webhooks_app.admin import charts

    package = Path(charts.__file__).resolve().parent.parent
    sources = [*package.glob("admin/*.py"), *package.glob("templates/**/*.html")]
    css = (package / "static/webhooks_app/admin.css").read_text()

    assert [str(path) for path in sources if 'style="' in path.read_text()] == []
    for index, colour in enumerate(charts.PALETTE):
        assert f".webhooks-series-{index} {{ background: {colour}; }}" in css
    for name, colour in charts.OUTCOME_COLOURS:
        assert f".webhooks-key-{name} {{ background: {colour}; }}" in css


def test_owners_are_a_raw_id_lookup_and_the_list_query_joins_nothing(admin_client, failed):
    from django.contrib import admin as django_admin
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    assert "owner" in django_admin.site._registry[Webhook].raw_id_fields  # no 10,000-user <select>
    with CaptureQueriesContext(connection) as queries:
        admin_client.get(url("delivery_changelist"))

    listing = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith('SELECT "webhooks_app_delivery"."id", ')
    ]
    # The page's rows come from the copied columns (event name, model, webhook id): no JOIN.
    assert listing
    assert all("JOIN" not in sql for sql in listing)
