"""No request reaches an address inside the network, whichever way a webhook was made or sent.

Every test here runs behind tests/netguard.py: name lookups come from a table, and a
connection to anything but a port the test declared is recorded and refused before a packet
leaves (the fixture fails if the guard is not in place). So "no socket was opened to the
address" is ``guard.attempts == []``, and the allowlist tests show the same guard does see
the connections the package is allowed to make.
"""

from __future__ import annotations

import io
import os

import pytest
from django.contrib.messages import get_messages
from django.core import checks
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from tests import netguard
from tests.factories import ArticleFactory, WebhookFactory
from webhooks_app import http, sync, tasks
from webhooks_app.admin.webhooks import WebhookForm
from webhooks_app.models import Delivery, DeliveryAttempt, Webhook

pytest_plugins = ["tests.api_support"]
pytestmark = [pytest.mark.django_db, pytest.mark.portable]

PUBLIC = "93.184.216.34"  # a documentation address: the guard refuses it like any other
NAMES = {
    "intranet.test": ["10.1.2.3"],
    "link.test": ["fe80::1"],
    "public.test": [PUBLIC],
    # Public while it is checked, loopback when it is used.
    "rebind.test": [PUBLIC, "127.0.0.1"],
    "hooks.internal.test": ["127.0.0.1"],
}
# Each form an attacker would try, and the address it really reaches.
TARGETS = {
    "loopback": ("https://127.0.0.1/hook", "127.0.0.1"),
    "private": ("https://10.0.0.1/hook", "10.0.0.1"),
    "metadata": ("https://169.254.169.254/latest/meta-data/", "169.254.169.254"),
    "ipv6-loopback": ("https://[::1]/hook", "::1"),
    "ipv4-mapped": ("https://[::ffff:127.0.0.1]/hook", "127.0.0.1"),
    "unspecified": ("https://0.0.0.0/hook", "0.0.0.0"),  # noqa: S104 - a target, not a bind
    "decimal": ("https://2130706433/hook", "127.0.0.1"),
    "octal": ("https://0177.0.0.1/hook", "127.0.0.1"),
    "localhost": ("https://localhost/hook", "127.0.0.1"),
    "cgnat": ("https://100.64.0.1/hook", "100.64.0.1"),
    "ipv6-unique-local": ("https://[fd00::1]/hook", "fd00::1"),
    "nat64-metadata": ("https://[64:ff9b::a9fe:a9fe]/hook", "64:ff9b::a9fe:a9fe"),
    "6to4-metadata": ("https://[2002:a9fe:a9fe::1]/hook", "2002:a9fe:a9fe::1"),
    "name-to-private": ("https://intranet.test/hook", "10.1.2.3"),
    "name-to-link-local": ("https://link.test/hook", "fe80::1"),
}
FORMS = sorted(TARGETS)
REBINDING = "https://rebind.test/hook"
# What settings can judge without DNS (no lookups at start-up): everything but the names.
LITERAL_FORMS = [form for form in FORMS if not form.startswith("name-")]


@pytest.fixture
def guard(settings):
    """The package's defaults (https only, nothing allowed inside the network), behind the
    network guard, with a transport of its own (no pooled connection or cached lookup from
    another test)."""
    settings.WEBHOOKS = {**settings.WEBHOOKS, "ALLOW_HTTP": False, "ALLOWED_TARGETS": []}
    redis_port = os.environ.get("WEBHOOKS_TEST_REDIS_PORT")
    installed = netguard.install(
        netguard.Guard(allowed_ports=[int(redis_port)] if redis_port else [], names=NAMES)
    )
    assert netguard.is_installed()
    previous, http._transport = http._transport, None
    cache.clear()  # the test-send throttle's counts
    yield installed
    if http._transport is not None:
        http._transport.close()
    http._transport = previous
    netguard.uninstall()


def assert_names_the_target(message: str, form: str) -> None:
    """The address when the URL spells it; for a name, the name: what DNS answered is not
    repeated to whoever reads the message (an API client could map internal names)."""
    url, address = TARGETS[form]
    if form.startswith("name-"):
        assert address not in message
        assert f"{url.split('/')[2]} resolves to a" in message
    else:
        assert address in message


def receiver_port(receiver) -> int:
    return int(receiver.server.server_address[1])


def test_the_guard_refuses_and_records_a_connection_the_package_makes(guard):
    """The control for every test below: what the package may send to is seen and stopped."""
    WebhookFactory(url="https://public.test/hook")
    ArticleFactory()

    tasks.run()

    assert guard.attempts == [(PUBLIC, 443)]
    attempt = DeliveryAttempt.objects.get()
    assert attempt.error_class == "ConnectionError"
    assert "Connection refused" in attempt.error_message


@pytest.mark.parametrize("form", FORMS)
def test_the_api_refuses_every_internal_target_on_create_and_update(guard, staff_client, form):
    url, _ = TARGETS[form]
    hook = WebhookFactory(url="https://public.test/hook")

    created = staff_client.post("/api/webhooks/", {"url": url}, format="json")
    updated = staff_client.patch(f"/api/webhooks/{hook.pk}/", {"url": url}, format="json")

    assert created.status_code == 400
    assert updated.status_code == 400
    assert "url" in created.json()
    assert created.json()["url"] == updated.json()["url"]
    assert guard.attempts == []


@pytest.mark.parametrize("form", FORMS)
def test_the_admin_form_refuses_what_the_api_refuses_with_the_same_message(
    guard, staff_client, form
):
    url, _ = TARGETS[form]
    api = staff_client.post("/api/webhooks/", {"url": url}, format="json").json()

    form_ = WebhookForm(data={"url": url, "is_active": True, "method": "POST"})

    assert not form_.is_valid()
    assert form_.errors["url"] == api["url"]
    assert guard.attempts == []


def test_the_admin_add_page_refuses_an_internal_target(guard, admin_client):
    response = admin_client.post(
        reverse("admin:webhooks_app_webhook_add"),
        {"url": "https://10.0.0.1/hook", "is_active": "on", "method": "POST"},
    )

    assert response.status_code == 200  # the form again, with its errors
    assert "10.0.0.1 is a private address" in response.content.decode()
    assert not Webhook.objects.exists()


@pytest.mark.parametrize("form", LITERAL_FORMS)
def test_a_settings_endpoint_with_an_internal_target_is_check_error_e030(guard, settings, form):
    url, _ = TARGETS[form]
    settings.WEBHOOKS = {**settings.WEBHOOKS, "ENDPOINTS": [{"name": "x", "url": url}]}

    found = [m for m in checks.run_checks() if m.id == "webhooks_app.E030"]

    assert len(found) == 1
    assert "WEBHOOKS['ENDPOINTS'][0]" in found[0].msg
    assert guard.attempts == []


@pytest.mark.parametrize("form", FORMS)
def test_a_row_made_with_the_orm_is_blocked_when_it_is_sent(guard, form):
    url, _ = TARGETS[form]
    Webhook.objects.create(url=url, secret="whsec_" + "a" * 32)  # no validation on this path
    ArticleFactory()

    tasks.run()

    assert guard.attempts == []
    row = Delivery.objects.get()
    assert row.status == "failed"  # at once: a retry cannot make the address public
    assert row.attempts == 1
    attempt = row.attempts_log.get()
    assert attempt.error_class == "Blocked"
    assert attempt.error_message.startswith("Blocked: ")
    assert_names_the_target(attempt.error_message, form)
    assert attempt.error_message.endswith('allow it with WEBHOOKS["ALLOWED_TARGETS"]')


def test_a_name_that_rebinds_after_the_check_is_caught_when_it_is_used(guard, staff_client):
    created = staff_client.post("/api/webhooks/", {"url": REBINDING}, format="json")
    assert created.status_code == 201  # public when the API looked it up
    ArticleFactory()

    tasks.run()

    assert guard.attempts == []  # neither the public address nor loopback was connected to
    attempt = DeliveryAttempt.objects.get()
    assert attempt.error_class == "Blocked"
    assert "rebind.test resolves to a loopback address;" in attempt.error_message
    assert "127.0.0.1" not in attempt.error_message  # what DNS answered is not repeated


@pytest.mark.parametrize(
    ("form", "shown"),
    [
        ("name-to-private", "intranet.test resolves to a private address;"),
        ("name-to-link-local", "link.test resolves to a link-local address"),
        ("private", "10.0.0.1 is a private address;"),
        ("decimal", "2130706433 resolves to 127.0.0.1, which is a loopback address;"),
        ("localhost", "localhost resolves to 127.0.0.1, which is a loopback address;"),
        ("ipv4-mapped", "a loopback address (it carries 127.0.0.1);"),
    ],
)
def test_a_refusal_names_an_address_only_when_the_url_itself_spells_it(
    guard, staff_client, form, shown
):
    """API clients read these messages: what DNS answered for a name stays out of them (it
    would let them map internal names); what the URL itself says is shown."""
    url, address = TARGETS[form]

    response = staff_client.post("/api/webhooks/", {"url": url}, format="json")

    assert response.status_code == 400
    (message,) = response.json()["url"]
    assert shown in message
    if form.startswith("name-"):
        assert address not in message


def test_a_name_with_one_internal_address_among_public_ones_uses_only_the_public(guard):
    guard.answer("mixed.test", [PUBLIC, "10.9.9.9"])
    WebhookFactory(url="https://mixed.test/hook")
    ArticleFactory()

    tasks.run()

    assert guard.attempts == [(PUBLIC, 443)]


@pytest.mark.parametrize("form", FORMS)
def test_every_test_send_path_is_blocked(guard, staff_client, admin_client, form):
    url, _ = TARGETS[form]
    hook = Webhook.objects.create(url=url, secret="whsec_" + "a" * 32)

    api = staff_client.post(f"/api/webhooks/{hook.pk}/test/", {}, format="json")
    admin_page = admin_client.post(
        reverse("admin:webhooks_app_webhook_send_test", args=[hook.pk]), follow=True
    )
    with pytest.raises(CommandError) as by_id:
        call_command("webhooks_send_test", str(hook.pk), stdout=io.StringIO())
    out = io.StringIO()
    with pytest.raises(CommandError) as ad_hoc:
        call_command("webhooks_send_test", "--url", url, "--secret", "s" * 32, stdout=out)

    assert guard.attempts == []
    assert api.status_code == 400
    assert 'allow it with WEBHOOKS["ALLOWED_TARGETS"]' in api.json()["url"][0]
    admin_message = next(str(m) for m in get_messages(admin_page.wsgi_request))
    assert "Blocked" in admin_message
    assert by_id.value.returncode == 1
    assert "Blocked" in str(by_id.value)
    assert ad_hoc.value.returncode == 1
    assert "Blocked: " in out.getvalue()
    assert_names_the_target(out.getvalue(), form)


def test_the_api_test_send_of_a_settings_endpoint_is_blocked_at_connect(guard, staff_client):
    sync_settings = {"name": "declared", "url": "https://rebind.test/hook", "secret": "s" * 32}
    guard.answer("rebind.test", "127.0.0.1")
    from django.conf import settings

    settings.WEBHOOKS = {**settings.WEBHOOKS, "ENDPOINTS": [sync_settings]}
    sync.sync_endpoints()
    hook = Webhook.objects.get(managed_by_settings=True)

    response = staff_client.post(f"/api/webhooks/{hook.pk}/test/", {}, format="json")

    assert guard.attempts == []
    assert response.status_code == 200
    assert response.json()["error"].startswith("Blocked: rebind.test resolves to a loopback")


def test_an_allowed_network_is_connected_to(guard, settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "ALLOWED_TARGETS": ["10.0.0.0/8"]}
    Webhook.objects.create(url="https://10.0.0.1/hook", secret="whsec_" + "a" * 32)
    Webhook.objects.create(url="https://intranet.test/hook", secret="whsec_" + "a" * 32)
    Webhook.objects.create(url="https://169.254.169.254/", secret="whsec_" + "a" * 32)
    ArticleFactory()

    tasks.run()

    assert sorted(guard.attempts) == [("10.0.0.1", 443), ("10.1.2.3", 443)]
    blocked = DeliveryAttempt.objects.get(error_class="Blocked")
    assert "169.254.169.254" in blocked.error_message


def test_an_allowed_host_is_delivered_to_with_its_own_name_in_the_host_header(
    guard, settings, receiver
):
    settings.WEBHOOKS = {
        **settings.WEBHOOKS,
        "ALLOW_HTTP": True,
        "ALLOWED_TARGETS": ["hooks.internal.test"],
    }
    guard.allow_port(receiver_port(receiver))
    WebhookFactory(url=f"http://hooks.internal.test:{receiver_port(receiver)}/hook")
    WebhookFactory(
        url=f"http://127.0.0.1:{receiver_port(receiver)}/hook"
    )  # the address itself is not
    ArticleFactory()

    tasks.run()

    assert len(receiver.requests) == 1
    assert receiver.requests[0].header("Host") == f"hooks.internal.test:{receiver_port(receiver)}"
    assert DeliveryAttempt.objects.filter(error_class="Blocked").count() == 1


def test_plain_http_is_blocked_at_connect_without_allow_http(guard, receiver):
    guard.allow_port(receiver_port(receiver))
    Webhook.objects.create(url=receiver.url, secret="whsec_" + "a" * 32)
    ArticleFactory()

    tasks.run()

    assert receiver.requests == []
    attempt = DeliveryAttempt.objects.get()
    assert attempt.error_message.startswith("Blocked: plain http is not allowed")


def test_a_changed_allowlist_or_allow_http_applies_to_the_next_request(guard, settings, receiver):
    """What a URL itself is refused for is remembered per URL, by the settings it depends
    on: a change to either is applied to the very next request."""
    guard.allow_port(receiver_port(receiver))
    request = http.OutgoingRequest("POST", receiver.url, {}, b"{}", timeout=5)

    def outcome() -> str:
        result = http.send(request)
        return result.error_message or f"HTTP {result.status_code}"

    assert outcome().startswith("Blocked: plain http is not allowed")
    settings.WEBHOOKS = {**settings.WEBHOOKS, "ALLOW_HTTP": True}
    assert outcome().startswith("Blocked: 127.0.0.1 is a loopback address")
    settings.WEBHOOKS = {**settings.WEBHOOKS, "ALLOWED_TARGETS": ["127.0.0.0/8"]}
    assert outcome() == "HTTP 200"
    settings.WEBHOOKS = {**settings.WEBHOOKS, "ALLOWED_TARGETS": []}
    assert outcome().startswith("Blocked: 127.0.0.1 is a loopback address")
    settings.WEBHOOKS = {**settings.WEBHOOKS, "ALLOW_HTTP": False}
    assert outcome().startswith("Blocked: plain http is not allowed")
    assert len(receiver.requests) == 1
