"""Every rule a webhook must satisfy: a 400 whose JSON names the field and the rule."""

import pytest

from tests.factories import WebhookFactory
from webhooks_app.models import Webhook

pytest_plugins = ["tests.api_support"]
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_settings")]

URL = "/api/webhooks/"
GOOD = {"url": "https://hooks.example.com/in"}


def rejected(client, body, field, words):
    response = client.post(URL, {**GOOD, **body}, format="json")
    assert response.status_code == 400, response.json()
    errors = response.json()
    assert field in errors, errors
    assert words.lower() in str(errors[field]).lower(), errors
    assert not Webhook.objects.exists()
    return errors


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("not a url", "absolute http"),
        ("/relative/path", "absolute http"),
        ("ftp://files.example.com/", "absolute http"),
        ("https://user:pw@hooks.example.com/", "user name or password"),
        ("https://127.0.0.2/", "loopback"),
        ("https://10.1.2.3/", "private"),
        ("https://192.168.0.10/", "private"),
        ("https://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("https://[::1]/", "::1"),
        ("https://[fd00:ec2::254]/", "fd00:ec2::254"),
        ("https://[::ffff:10.0.0.1]/", "private"),
        ("https://100.100.100.200/", "carrier-grade NAT"),
        ("https://0.0.0.0/", "unspecified"),
        ("https://224.0.0.1/", "multicast"),
        # 127.0.0.2: the fixture allows 127.0.0.1, the suite's receiver.
        ("https://2130706434/", "2130706434 resolves to 127.0.0.2, which is a loopback"),
        ("https://0177.0.0.2/", "loopback"),
        ("https://localhost/", "loopback"),
        ("https://[::ffff:127.0.0.1]/", "it carries 127.0.0.1"),
        # A name: its kind of address, not what DNS answered (tests/test_guard.py).
        ("https://db.internal/", "db.internal resolves to a private address"),
        ("https://metadata.test/", "metadata.test resolves to a link-local address"),
        ("https://v6.test/", "v6.test resolves to a private address"),
        ("https://mixed.test/", "mixed.test resolves to a loopback address"),
        ("https://nowhere.invalid/", "could not be resolved"),
    ],
)
def test_url_rules(staff_client, url, words):
    rejected(staff_client, {"url": url}, "url", words)


def test_http_needs_allow_http(staff_client, api_settings):
    api_settings.WEBHOOKS = {**api_settings.WEBHOOKS, "ALLOW_HTTP": False}
    rejected(staff_client, {"url": "http://hooks.example.com/"}, "url", "must use https")


def test_allowed_targets_admit_hosts_and_networks(staff_client, api_settings):
    api_settings.WEBHOOKS = {
        **api_settings.WEBHOOKS,
        "ALLOWED_TARGETS": ["db.internal", "169.254.0.0/16"],
    }
    for url in ("https://db.internal/", "https://metadata.test/", "https://169.254.1.1/"):
        assert staff_client.post(URL, {"url": url}, format="json").status_code == 201, url
    response = staff_client.post(URL, {"url": "https://127.0.0.1/"}, format="json")
    assert response.status_code == 400
    assert "loopback" in str(response.json()["url"])


def test_url_is_checked_on_update_too(staff_client):
    hook = WebhookFactory(url="https://ok.example.com/")
    response = staff_client.patch(f"{URL}{hook.pk}/", {"url": "https://10.0.0.1/"}, format="json")
    assert response.status_code == 400
    assert "private" in str(response.json()["url"])


@pytest.mark.parametrize(
    ("events", "words"),
    [
        (["nope"], "'nope'"),
        (["create", "made.up.event"], "made.up.event"),
        (["bad name!"], "not a known event"),
        ("create", "list"),
    ],
)
def test_events_must_be_known_names_or_wildcards(staff_client, events, words):
    rejected(staff_client, {"events": events}, "events", words)


def test_events_accept_known_names_and_wildcards(staff_client):
    body = {**GOOD, "events": ["create", "backup.complete", "user.*", "*", "publish"]}
    assert staff_client.post(URL, body, format="json").status_code == 201


def test_models_must_be_watched(staff_client):
    rejected(staff_client, {"models": ["article", "blogPost"]}, "models", "'blogPost'")
    body = {**GOOD, "models": ["article", "invoice", "user"]}
    assert staff_client.post(URL, body, format="json").status_code == 201


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({"Bad Header": "x"}, "not a valid header name"),
        ({"X-Ok": "line\r\nInjected: 1"}, "without CR or LF"),
        ({"X-Ok": "line\nbreak"}, "without CR or LF"),
        ({"webhook-signature": "forged"}, "sends it itself"),
        ({"Content-Type": "text/plain"}, "sends it itself"),
        ({"X-Webhook-Signature": "forged"}, "signature header"),
        (["X-Ok"], "dictionary"),
    ],
)
def test_header_rules(staff_client, headers, words):
    rejected(staff_client, {"headers": headers}, "headers", words)


def test_a_custom_signature_header_is_protected_too(staff_client):
    rejected(
        staff_client,
        {"signature_header": "X-Sig", "headers": {"x-sig": "forged"}},
        "headers",
        "signature header",
    )
    hook = WebhookFactory(signature_header="X-Sig")
    response = staff_client.patch(
        f"{URL}{hook.pk}/", {"headers": {"X-Sig": "forged"}}, format="json"
    )
    assert response.status_code == 400
    assert "signature header" in str(response.json()["headers"])


def test_secret_values_never_appear_in_errors(staff_client):
    errors = rejected(
        staff_client, {"headers": {"Authorization": "Bearer TOPSECRET\n"}}, "headers", "CR or LF"
    )
    assert "TOPSECRET" not in str(errors)
    errors = rejected(staff_client, {"secret": "short-SECRET"}, "secret", "at least 16")
    assert "short-SECRET" not in str(errors)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"timeout": 0}, "timeout", "greater than 0"),
        ({"timeout": -1}, "timeout", "greater than 0"),
        ({"timeout": 61}, "timeout", "at most 60"),
        ({"timeout": 5000}, "timeout", "seconds, not milliseconds"),
        ({"timeout": "soon"}, "timeout", "valid number"),
        ({"retries": -1}, "retries", "from 0 to 50"),
        ({"retries": 51}, "retries", "from 0 to 50"),
        ({"retries": 1.5}, "retries", "valid integer"),
        ({"method": "GET"}, "method", "not a valid choice"),
        ({"method": "post"}, "method", "not a valid choice"),
        ({"signature_header": "Bad Header"}, "signature_header", "valid http header"),
        ({"signature_header": "webhook-id"}, "signature_header", "sends itself"),
        ({"signature_prefix": "x" * 33}, "signature_prefix", "32 characters"),
        ({"signature_prefix": "a\nb"}, "signature_prefix", "CR or LF"),
        ({"secret": "has a space in it!"}, "secret", "spaces"),
        ({"secret": "x" * 256}, "secret", "no more than 255"),
        ({"name": "n" * 201}, "name", "no more than 200"),
        ({"is_active": "maybe"}, "is_active", "valid boolean"),
        ({"disable_after_seconds": 30}, "disable_after_seconds", "0 (never disable"),
        ({"disable_after_seconds": -1}, "disable_after_seconds", "greater than or equal to 0"),
        ({"disable_after_failures": 0}, "disable_after_failures", "from 1 to 2,147,483,647"),
    ],
)
def test_field_rules(staff_client, body, field, words):
    rejected(staff_client, body, field, words)


def test_bounds_are_inclusive(staff_client):
    body = {**GOOD, "timeout": 60, "retries": 50, "method": "PATCH"}
    assert staff_client.post(URL, body, format="json").status_code == 201


@pytest.mark.parametrize(
    "policy",
    [
        {"disable_after_seconds": 0, "disable_after_failures": 1},
        {"disable_after_seconds": 60, "disable_after_failures": 2_147_483_647},
        {"disable_after_seconds": None, "disable_after_failures": None},
    ],
)
def test_a_webhooks_own_failure_policy_bounds(staff_client, policy):
    response = staff_client.post(URL, {**GOOD, **policy}, format="json")
    assert response.status_code == 201, response.json()
    webhook = Webhook.objects.get()
    assert webhook.disable_after_seconds == policy["disable_after_seconds"]
    assert webhook.disable_after_failures == policy["disable_after_failures"]


def test_unknown_fields_are_rejected_by_name(staff_client):
    errors = rejected(staff_client, {"event": ["create"], "colour": "red"}, "event", "unknown")
    assert "colour" in errors


def test_unknown_fields_are_rejected_on_partial_update(staff_client):
    hook = WebhookFactory()
    response = staff_client.patch(f"{URL}{hook.pk}/", {"evnts": ["*"]}, format="json")
    assert response.status_code == 400
    assert "evnts" in response.json()


def test_secret_cannot_be_changed_by_update(staff_client):
    hook = WebhookFactory()
    response = staff_client.patch(
        f"{URL}{hook.pk}/", {"secret": "whsec_" + "B" * 40}, format="json"
    )
    assert response.status_code == 400
    assert "rotate-secret" in str(response.json()["secret"])
    assert Webhook.objects.get().secret == hook.secret


def test_url_is_required(staff_client):
    response = staff_client.post(URL, {"name": "x"}, format="json")
    assert response.status_code == 400
    assert "required" in str(response.json()["url"])


@pytest.mark.parametrize(
    "address",
    ["64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "::127.0.0.1", "::ffff:10.0.0.1"],
)
def test_ipv6_forms_of_internal_ipv4_addresses_are_not_public(address):
    import ipaddress

    from webhooks_app.targets import is_public

    assert is_public(ipaddress.ip_address(address)) is False
    assert is_public(ipaddress.ip_address("2606:4700:4700::1111")) is True
