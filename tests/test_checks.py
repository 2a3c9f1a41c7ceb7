"""System checks: every ID in webhooks_app/checks.py, triggered by a bad value.

Each case asserts the exact list of IDs (a bad value must not drag unrelated errors along) and
that the message names the setting and the rule, since that line is all an operator sees when
``runserver`` refuses to start.
"""

import io
from typing import Any

import pytest
from django.conf import settings
from django.core.checks import CheckMessage
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from webhooks_app.checks import check_admin_banner, check_q_cluster, check_settings

URL = "https://example.com/hook"


def ids(messages: list[CheckMessage]) -> list[str]:
    return [message.id or "" for message in messages]


def text(message: CheckMessage) -> str:
    return f"{message.msg} {message.hint or ''}"


def with_changes(**changes: Any) -> dict[str, Any]:
    """The suite's valid WEBHOOKS with some keys replaced, so only the change can be wrong."""
    return {**settings.WEBHOOKS, **changes}


def settings_errors(webhooks: Any) -> list[CheckMessage]:
    # W004 (no SECRET_KEYS outside DEBUG) would join nearly every case here; its own tests
    # are below.
    with override_settings(WEBHOOKS=webhooks):
        return [message for message in check_settings() if message.id != "webhooks_app.W004"]


def endpoint(**options: Any) -> dict[str, Any]:
    return {"url": URL, **options}


def test_suite_settings_are_valid():
    assert check_settings() == []
    assert check_q_cluster() == []
    assert check_admin_banner() == []


def test_no_webhooks_setting_is_valid():
    with override_settings():
        del settings.WEBHOOKS
        assert check_settings() == []


def test_checks_are_registered():
    # A function nobody registered would pass every test above and still never run.
    with override_settings(WEBHOOKS={"TIMEOUT": 0}), pytest.raises(SystemCheckError) as excinfo:
        call_command("check")
    assert "webhooks_app.E008" in str(excinfo.value)
    assert "WEBHOOKS['TIMEOUT']" in str(excinfo.value)


# --- top level -----------------------------------------------------------------------------


def test_not_a_dict():
    errors = settings_errors(["MODELS"])
    assert ids(errors) == ["webhooks_app.E001"]
    assert "WEBHOOKS must be a dict, not list" in errors[0].msg


def test_unknown_keys():
    errors = settings_errors(with_changes(TIMOUT=5, Models={}))
    assert ids(errors) == ["webhooks_app.E002"]
    assert "WEBHOOKS has unknown key(s): Models, TIMOUT" in errors[0].msg
    assert "TIMEOUT" in (errors[0].hint or "")


# --- MODELS --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("models", "error_id", "expected"),
    [
        pytest.param(
            "tests.Article",
            "E003",
            "WEBHOOKS['MODELS'] must be a dict of model labels",
            id="not-dict-or-list",
        ),
        pytest.param(
            {"tests.Nope": {}},
            "E003",
            "WEBHOOKS['MODELS']['tests.Nope']: 'tests.Nope' is not an installed model",
            id="unknown-label",
        ),
        pytest.param(
            ["tests.Article", "Article"],
            "E003",
            "'Article' is not an installed model",
            id="list-with-bad-label",
        ),
        pytest.param(
            {"tests.Article": "article"},
            "E004",
            "WEBHOOKS['MODELS']['tests.Article'] must be a dict of options",
            id="options-not-dict",
        ),
        pytest.param(
            {"tests.Article": {"colour": "red"}},
            "E004",
            "WEBHOOKS['MODELS']['tests.Article'] has unknown option(s): colour",
            id="unknown-option",
        ),
        pytest.param(
            {"tests.Invoice": {"fields": ["number"], "exclude": ["internal_note"]}},
            "E004",
            "give 'fields' or 'exclude', not both",
            id="fields-and-exclude",
        ),
        pytest.param(
            {"tests.Invoice": {"fields": ["number", "total"]}},
            "E004",
            "WEBHOOKS['MODELS']['tests.Invoice']['fields'] names unknown field(s): total",
            id="unknown-field",
        ),
        pytest.param(
            {"tests.Invoice": {"exclude": ["nope"]}},
            "E004",
            "['exclude'] names unknown field(s): nope",
            id="unknown-excluded-field",
        ),
        pytest.param(
            {"tests.Invoice": {"fields": "number"}},
            "E004",
            "['fields'] must be a list of field names",
            id="fields-not-list",
        ),
        pytest.param(
            {"tests.Invoice": {"name": ""}},
            "E004",
            "['name'] must be a non-empty string",
            id="empty-name",
        ),
        pytest.param(
            {"tests.Article": {"name": "thing"}, "tests.Invoice": {"name": "thing"}},
            "E004",
            "WEBHOOKS['MODELS']['tests.Invoice']['name'] 'thing' is already the name of "
            "tests.Article",
            id="duplicate-name",
        ),
        pytest.param(
            {"tests.Invoice": {"serializer": "tests.no_such_module.serialize"}},
            "E005",
            "WEBHOOKS['MODELS']['tests.Invoice']['serializer']: cannot import "
            "'tests.no_such_module.serialize'",
            id="serializer-not-importable",
        ),
        pytest.param(
            {"tests.Invoice": {"serializer": "webhooks_app.conf.DEFAULTS"}},
            "E005",
            "'webhooks_app.conf.DEFAULTS' is not callable",
            id="serializer-not-callable",
        ),
        pytest.param(
            {"tests.Invoice": {"serializer": 42}},
            "E005",
            "['serializer'] must be a dotted import path string",
            id="serializer-not-string",
        ),
        pytest.param(
            {"tests.Article": {"status_field": "state", "published_value": "published"}},
            "E006",
            "WEBHOOKS['MODELS']['tests.Article']['status_field'] 'state' is not a field of "
            "tests.Article",
            id="status-field-unknown",
        ),
        pytest.param(
            {"tests.Article": {"status_field": "status"}},
            "E006",
            "has 'status_field' but no 'published_value'",
            id="published-value-missing",
        ),
        pytest.param(
            {"tests.Article": {"published_value": "published"}},
            "E006",
            "has 'published_value' but no 'status_field'",
            id="published-value-without-status-field",
        ),
    ],
)
def test_models_errors(models, error_id, expected):
    errors = settings_errors(with_changes(MODELS=models, ENDPOINTS=[]))
    assert ids(errors) == [f"webhooks_app.{error_id}"]
    assert expected in errors[0].msg


@pytest.mark.parametrize(
    "models",
    [
        ["tests.Article", "tests.Invoice"],
        {"tests.Account": {"exclude": ["password"]}},
        {"tests.Account": {"fields": ["email", "password"], "name": "acct"}},
        {"tests.Invoice": {"serializer": "tests.serializers.invoice_summary"}},
        {"tests.Article": {"status_field": "status", "published_value": "published"}},
    ],
)
def test_models_valid(models):
    assert settings_errors(with_changes(MODELS=models, ENDPOINTS=[])) == []


# --- ENDPOINTS -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        pytest.param(endpoint(), "WEBHOOKS['ENDPOINTS'] must be a list of dicts", id="not-list"),
        pytest.param([URL], "WEBHOOKS['ENDPOINTS'][0] must be a dict", id="entry-not-dict"),
        pytest.param(
            [endpoint(secrets="x")],
            "WEBHOOKS['ENDPOINTS'][0] has unknown key(s): secrets",
            id="unknown-key",
        ),
        pytest.param(
            [endpoint(url="ftp://x")],
            "WEBHOOKS['ENDPOINTS'][0]['url']: Enter an absolute http:// or https:// URL. Got 'ftp://x'",
            id="ftp-url",
        ),
        pytest.param(
            [endpoint(url="not a url")],
            "['url']: Enter an absolute http:// or https:// URL. Got 'not a url'",
            id="not-a-url",
        ),
        pytest.param(
            [{"events": ["create"]}],
            "['url']: Enter an absolute http:// or https:// URL. Got None",
            id="missing-url",
        ),
        pytest.param(
            [endpoint(), endpoint()],
            f"WEBHOOKS['ENDPOINTS'][1] duplicates endpoint '{URL}'",
            id="duplicate-url",
        ),
        pytest.param(
            [endpoint(name="crm"), endpoint(name="crm", url="https://example.org/")],
            "WEBHOOKS['ENDPOINTS'][1] duplicates endpoint 'crm'",
            id="duplicate-name",
        ),
        pytest.param(
            [endpoint(events=["craete"])],
            "WEBHOOKS['ENDPOINTS'][0]['events']: Not a known event name or wildcard: 'craete'",
            id="unknown-event",
        ),
        pytest.param(
            [endpoint(events=["create", 5])],
            "WEBHOOKS['ENDPOINTS'][0]['events'] must be a list of event names or wildcards",
            id="events-not-strings",
        ),
        pytest.param(
            [endpoint(models=["articles"])],
            "WEBHOOKS['ENDPOINTS'][0]['models']: Not the name of a watched model: 'articles'",
            id="unknown-model",
        ),
        pytest.param(
            [endpoint(headers="Authorization: x")],
            "['headers'] must be a dict of header names to values",
            id="headers-not-dict",
        ),
        pytest.param(
            [endpoint(headers={"Bad Header": "x"})],
            "WEBHOOKS['ENDPOINTS'][0]['headers']: 'Bad Header' is not a valid header name",
            id="header-invalid-name",
        ),
        pytest.param(
            [endpoint(headers={"webhook-signature": "v1,forged"})],
            "'webhook-signature' cannot be set: django-webhooks sends it itself",
            id="header-reserved-signature",
        ),
        pytest.param(
            [endpoint(headers={"Content-Type": "text/plain"})],
            "'Content-Type' cannot be set: django-webhooks sends it itself",
            id="header-reserved-content-type",
        ),
        pytest.param(
            [endpoint(headers={"X-Token": "abc\r\nX-Admin: 1"})],
            "['headers']: The value of 'X-Token' must be text without CR or LF",
            id="header-crlf",
        ),
        pytest.param(
            [endpoint(headers={"X-Token": "abc\n"})],
            "The value of 'X-Token' must be text without CR or LF",
            id="header-lf",
        ),
        pytest.param(
            [endpoint(method="GET")],
            "WEBHOOKS['ENDPOINTS'][0]['method'] must be one of POST, PUT, PATCH",
            id="method-get",
        ),
        pytest.param(
            [endpoint(timeout=0)],
            "WEBHOOKS['ENDPOINTS'][0]['timeout'] must be a number of seconds greater than 0 "
            "and at most 60",
            id="timeout-zero",
        ),
        pytest.param(
            [endpoint(timeout="5")], "['timeout'] must be a number of seconds", id="timeout-str"
        ),
        pytest.param(
            [endpoint(retries=-1)],
            "WEBHOOKS['ENDPOINTS'][0]['retries'] must be a whole number from 0 to 50",
            id="retries-negative",
        ),
        pytest.param(
            [endpoint(retries=51)], "['retries'] must be a whole number", id="retries-too-many"
        ),
        pytest.param(
            [endpoint(retries=True)], "['retries'] must be a whole number", id="retries-bool"
        ),
        pytest.param(
            [endpoint(max_in_flight=0)],
            "WEBHOOKS['ENDPOINTS'][0]['max_in_flight'] must be a whole number from 1 to 10,000",
            id="max-in-flight-zero",
        ),
        pytest.param(
            [endpoint(rate_limit=0)],
            "WEBHOOKS['ENDPOINTS'][0]['rate_limit'] must be a number of requests per second "
            "above 0 and at most 10,000",
            id="rate-limit-zero",
        ),
        pytest.param(
            [endpoint(rate_limit="5/s")], "['rate_limit'] must be a number", id="rate-limit-str"
        ),
        pytest.param(
            [endpoint(secret="")],
            "WEBHOOKS['ENDPOINTS'][0]['secret'] must be at least 16 characters",
            id="secret-empty",
        ),
        pytest.param(
            [endpoint(signature_header="bad header")],
            "WEBHOOKS['ENDPOINTS'][0]['signature_header']: 'bad header' is not a valid HTTP "
            "header name",
            id="signature-header-invalid",
        ),
        pytest.param(
            [endpoint(signature_header="Webhook-Signature")],
            "'Webhook-Signature' is a header django-webhooks sends itself",
            id="signature-header-reserved",
        ),
        pytest.param(
            [endpoint(disable_after_seconds=30)],
            "WEBHOOKS['ENDPOINTS'][0]['disable_after_seconds'] must be 0 (never disable this "
            "webhook) or a whole number of seconds from 60 to 2,147,483,647",
            id="disable-after-seconds-too-short",
        ),
        pytest.param(
            [endpoint(disable_after_seconds="5d")],
            "WEBHOOKS['ENDPOINTS'][0]['disable_after_seconds'] must be 0",
            id="disable-after-seconds-text",
        ),
        pytest.param(
            [endpoint(disable_after_failures=0)],
            "WEBHOOKS['ENDPOINTS'][0]['disable_after_failures'] must be a whole number from 1",
            id="disable-after-failures-zero",
        ),
        pytest.param(
            [endpoint(signature_prefix="sha256=\n")],
            "WEBHOOKS['ENDPOINTS'][0]['signature_prefix'] must be text of at most 32 "
            "characters, without CR or LF",
            id="signature-prefix-newline",
        ),
    ],
)
def test_endpoint_errors(endpoints, expected):
    errors = settings_errors(with_changes(ENDPOINTS=endpoints))
    assert ids(errors) == ["webhooks_app.E007"]
    assert expected in errors[0].msg


def test_endpoint_timeout_in_milliseconds_hint():
    errors = settings_errors(with_changes(ENDPOINTS=[endpoint(timeout=5000)]))
    assert ids(errors) == ["webhooks_app.E007"]
    assert "['timeout'] must be a number of seconds" in errors[0].msg
    assert "Seconds, not milliseconds" in errors[0].msg


@pytest.mark.parametrize(
    "endpoints",
    [
        [endpoint(events=["user.*"])],
        [endpoint(events=["*"])],
        [endpoint(events=["create", "publish", "backup.complete", "user.login", "webhook.test"])],
        [endpoint(models=["article", "account", "user"])],
        [endpoint(method="put", timeout=0.5, retries=0, secret="s3cret-but-long-enough")],
        [endpoint(headers={"Authorization": "Bearer abc", "X-Tenant": "42"})],
        [endpoint(signature_header="X-Scalar-Signature", signature_prefix="sha256=")],
        [endpoint(name="a"), endpoint(name="b")],
        [endpoint(disable_after_seconds=0), endpoint(name="b", disable_after_failures=1)],
        [endpoint(disable_after_seconds=3600, disable_after_failures=10)],
        [],
    ],
)
def test_endpoints_valid(endpoints):
    assert settings_errors(with_changes(ENDPOINTS=endpoints)) == []


# --- EVENTS, USER_EVENTS, USER_SERIALIZER ---------------------------------------------------


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param(
            "backup.complete",
            "WEBHOOKS['EVENTS'] must be a dict of event names to descriptions",
            id="not-dict",
        ),
        pytest.param(
            {"bad name": "x"},
            "WEBHOOKS['EVENTS']: 'bad name' is not a valid event name",
            id="space",
        ),
        pytest.param({"backup.": "x"}, "'backup.' is not a valid event name", id="trailing-dot"),
        pytest.param(
            {"create": "x"}, "WEBHOOKS['EVENTS']: 'create' is a built-in event name", id="create"
        ),
        pytest.param({"publish": "x"}, "'publish' is a built-in event name", id="publish"),
        pytest.param({"user.login": "x"}, "'user.login' is a built-in event name", id="user"),
        pytest.param({"webhook.test": "x"}, "'webhook.test' is a built-in", id="test-event"),
    ],
)
def test_events_errors(events, expected):
    errors = settings_errors(with_changes(EVENTS=events))
    assert ids(errors) == ["webhooks_app.E019"]
    assert expected in errors[0].msg


def test_events_list_form_is_valid():
    assert settings_errors(with_changes(EVENTS=["backup.complete", "report.ready"])) == []


@pytest.mark.parametrize("user_events", [["user.delete"], "user.create", [1]])
def test_user_events_errors(user_events):
    errors = settings_errors(with_changes(USER_EVENTS=user_events))
    assert ids(errors) == ["webhooks_app.E020"]
    assert "WEBHOOKS['USER_EVENTS'] must be a list drawn from user.create, user.login" in (
        errors[0].msg
    )


def test_user_serializer_not_importable():
    errors = settings_errors(with_changes(USER_SERIALIZER="tests.nowhere.user_data"))
    assert ids(errors) == ["webhooks_app.E021"]
    assert "WEBHOOKS['USER_SERIALIZER']: cannot import 'tests.nowhere.user_data'" in errors[0].msg


def test_user_serializer_valid():
    serializer = "tests.serializers.invoice_summary"
    assert settings_errors(with_changes(USER_SERIALIZER=serializer)) == []


# --- RETRY_SCHEDULE ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ([], "must be a non-empty list of seconds >= 0, or a dict"),
        ([-1], "must be a non-empty list of seconds >= 0"),
        ([30, "300"], "must be a non-empty list of seconds >= 0"),
        ([True], "must be a non-empty list of seconds >= 0"),
        ("60", "must be a non-empty list of seconds >= 0"),
        ({"initial": "x"}, "has invalid keys or values: {'initial': 'x'}"),
        ({"foo": 1}, "has invalid keys or values: {'foo': 1}"),
        ({"factor": 2}, "has invalid keys or values"),
        ({"initial": 60, "factor": 0.5}, "has invalid keys or values"),
        ({"initial": 60, "max": -1}, "has invalid keys or values"),
    ],
)
def test_retry_schedule_errors(schedule, expected):
    errors = settings_errors(with_changes(RETRY_SCHEDULE=schedule))
    assert ids(errors) == ["webhooks_app.E010"]
    assert f"WEBHOOKS['RETRY_SCHEDULE'] {expected}" in errors[0].msg
    assert "[30, 300, 1800]" in (errors[0].hint or "")


@pytest.mark.parametrize(
    "schedule",
    [
        [0],
        [30, 300, 1800, 7200],
        (5, 10),
        [0.5, 1.5],
        {"initial": 60},
        {"initial": 0, "factor": 1},
        {"initial": 60, "factor": 2, "max": 1800},
    ],
)
def test_retry_schedule_valid(schedule):
    assert settings_errors(with_changes(RETRY_SCHEDULE=schedule)) == []


# --- scalars -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "error_id", "expected"),
    [
        (
            {"TIMEOUT": 0},
            "E008",
            "WEBHOOKS['TIMEOUT'] must be a number of seconds greater than 0 and at most 60",
        ),
        ({"TIMEOUT": "5"}, "E008", "WEBHOOKS['TIMEOUT'] must be a number of seconds"),
        ({"TIMEOUT": True}, "E008", "WEBHOOKS['TIMEOUT'] must be a number of seconds"),
        ({"TIMEOUT": -1}, "E008", "WEBHOOKS['TIMEOUT'] must be a number of seconds"),
        ({"RETRIES": -1}, "E009", "WEBHOOKS['RETRIES'] must be a whole number from 0 to 50"),
        ({"RETRIES": 51}, "E009", "WEBHOOKS['RETRIES'] must be a whole number from 0 to 50"),
        ({"RETRIES": True}, "E009", "WEBHOOKS['RETRIES'] must be a whole number"),
        ({"RETRIES": 2.5}, "E009", "WEBHOOKS['RETRIES'] must be a whole number"),
        ({"RETRY_JITTER": 1.5}, "E011", "WEBHOOKS['RETRY_JITTER'] must be a fraction from 0"),
        ({"RETRY_JITTER": 1}, "E011", "WEBHOOKS['RETRY_JITTER'] must be a fraction"),
        ({"RETRY_JITTER": -0.1}, "E011", "WEBHOOKS['RETRY_JITTER'] must be a fraction"),
        ({"RETRY_JITTER": "0.2"}, "E011", "WEBHOOKS['RETRY_JITTER'] must be a fraction"),
        (
            {"SIGNATURE_HEADER": "bad header"},
            "E012",
            "WEBHOOKS['SIGNATURE_HEADER']: 'bad header' is not a valid HTTP header name",
        ),
        ({"SIGNATURE_HEADER": ""}, "E012", "WEBHOOKS['SIGNATURE_HEADER']: '' is not a valid HTTP"),
        (
            {"SIGNATURE_HEADER": "webhook-id"},
            "E012",
            "WEBHOOKS['SIGNATURE_HEADER']: 'webhook-id' is a header django-webhooks sends itself",
        ),
        (
            {"SIGNATURE_PREFIX": "sha256=\r\n"},
            "E013",
            "WEBHOOKS['SIGNATURE_PREFIX'] must be text of at most 32 characters, without CR or LF",
        ),
        ({"SIGNATURE_PREFIX": "x" * 33}, "E013", "WEBHOOKS['SIGNATURE_PREFIX'] must be"),
        ({"SIGNATURE_PREFIX": None}, "E013", "WEBHOOKS['SIGNATURE_PREFIX'] must be"),
        (
            {"RESPONSE_BODY_LIMIT": -1},
            "E014",
            "WEBHOOKS['RESPONSE_BODY_LIMIT'] must be a number of bytes from 0 to 1 MiB",
        ),
        ({"RESPONSE_BODY_LIMIT": 2**21}, "E014", "WEBHOOKS['RESPONSE_BODY_LIMIT'] must be"),
        ({"RESPONSE_BODY_LIMIT": "16384"}, "E014", "WEBHOOKS['RESPONSE_BODY_LIMIT'] must be"),
        (
            {"QUEUE": ""},
            "E015",
            "WEBHOOKS['QUEUE'] must be None or the name of a django-q2 cluster",
        ),
        ({"QUEUE": 5}, "E015", "WEBHOOKS['QUEUE'] must be None or the name"),
        ({"BATCH_SIZE": 0}, "E016", "WEBHOOKS['BATCH_SIZE'] must be a whole number from 1 to"),
        ({"BATCH_SIZE": 1001}, "E016", "WEBHOOKS['BATCH_SIZE'] must be a whole number"),
        ({"BATCH_SIZE": 1.5}, "E016", "WEBHOOKS['BATCH_SIZE'] must be a whole number"),
        (
            {"LEASE_SECONDS": 5},
            "E017",
            "WEBHOOKS['LEASE_SECONDS'] must be a number of seconds >= 10",
        ),
        ({"LEASE_SECONDS": "45"}, "E017", "WEBHOOKS['LEASE_SECONDS'] must be a number"),
        (
            {"DISPATCH_INTERVAL": 0},
            "E018",
            "WEBHOOKS['DISPATCH_INTERVAL'] must be from 0.1 to 10 seconds",
        ),
        ({"DISPATCH_INTERVAL": 11}, "E018", "WEBHOOKS['DISPATCH_INTERVAL'] must be from"),
        (
            {"TASK_SECONDS": 0.1},
            "E018",
            "WEBHOOKS['TASK_SECONDS'] must be from 0.5 to 60 seconds",
        ),
        ({"TASK_SECONDS": 61}, "E018", "WEBHOOKS['TASK_SECONDS'] must be"),
        ({"TASK_SECONDS": "5"}, "E018", "WEBHOOKS['TASK_SECONDS'] must be"),
        (
            {"MAX_IN_FLIGHT": 0},
            "E027",
            "WEBHOOKS['MAX_IN_FLIGHT'] must be a whole number from 1 to 10,000",
        ),
        ({"MAX_IN_FLIGHT": 2.5}, "E027", "WEBHOOKS['MAX_IN_FLIGHT'] must be a whole number"),
        ({"MAX_IN_FLIGHT": None}, "E027", "WEBHOOKS['MAX_IN_FLIGHT'] must not be None"),
        (
            {"ENDPOINT_MAX_IN_FLIGHT": 10_001},
            "E027",
            "WEBHOOKS['ENDPOINT_MAX_IN_FLIGHT'] must be a whole number from 1 to 10,000",
        ),
        ({"ENDPOINT_MAX_IN_FLIGHT": True}, "E027", "WEBHOOKS['ENDPOINT_MAX_IN_FLIGHT'] must be"),
        ({"RETRY_SHARE": 1.5}, "E028", "WEBHOOKS['RETRY_SHARE'] must be a fraction from 0 to 1"),
        ({"RETRY_SHARE": "half"}, "E028", "WEBHOOKS['RETRY_SHARE'] must be a fraction"),
        (
            {"SUBSCRIPTION_CACHE_SECONDS": -1},
            "E029",
            "WEBHOOKS['SUBSCRIPTION_CACHE_SECONDS'] must be from 0 to 60 seconds",
        ),
        ({"SUBSCRIPTION_CACHE_SECONDS": 61}, "E029", "WEBHOOKS['SUBSCRIPTION_CACHE_SECONDS']"),
        (
            {"RETRY_AFTER_MAX": 0},
            "E022",
            "WEBHOOKS['RETRY_AFTER_MAX'] must be a number of seconds >= 1",
        ),
        ({"RETRY_AFTER_MAX": "3600"}, "E022", "WEBHOOKS['RETRY_AFTER_MAX'] must be a number"),
    ],
    ids=lambda value: repr(value) if isinstance(value, dict) else None,
)
def test_scalar_errors(changes, error_id, expected):
    errors = settings_errors(with_changes(**changes))
    assert ids(errors) == [f"webhooks_app.{error_id}"]
    assert expected in errors[0].msg


def test_retry_share_hint_explains_it():
    (error,) = settings_errors(with_changes(RETRY_SHARE=2))
    assert "half of every endpoint's slots" in (error.hint or "")


def test_timeout_in_milliseconds():
    errors = settings_errors(with_changes(TIMEOUT=5000))
    assert ids(errors) == ["webhooks_app.E008"]
    assert (
        "WEBHOOKS['TIMEOUT'] must be a number of seconds greater than 0 and at most 60"
        in errors[0].msg
    )
    assert "Seconds, not milliseconds" in errors[0].msg


@pytest.mark.parametrize(
    "changes",
    [
        {"TIMEOUT": 0.5, "RETRIES": 0, "RETRY_JITTER": 0},
        {"TIMEOUT": 60, "LEASE_SECONDS": 120},
        {"SIGNATURE_HEADER": "X-Hub-Signature-256", "SIGNATURE_PREFIX": "sha256="},
        {"RESPONSE_BODY_LIMIT": 0, "QUEUE": "webhooks", "BATCH_SIZE": 1000},
        {"DISPATCH_INTERVAL": 0.1, "TASK_SECONDS": 60, "RETRY_AFTER_MAX": 1},
        {"TIMEOUT": 30, "LEASE_SECONDS": 10},
        {"MAX_IN_FLIGHT": 1, "ENDPOINT_MAX_IN_FLIGHT": 10_000, "RETRY_SHARE": 0},
        {"RETRY_SHARE": 1, "SUBSCRIPTION_CACHE_SECONDS": 0},
        {"ENABLED": False, "DEBUG": True, "QUEUE": None},
    ],
)
def test_scalars_valid(changes):
    assert settings_errors(with_changes(**changes)) == []


# A wrong *type* in one place must come back as one error, not as an exception (which hides
# every other check's message) nor as one error per character of a string.
@pytest.mark.parametrize(
    ("webhooks", "error_id"),
    [
        pytest.param({"ENDPOINTS": [endpoint(events=5)]}, "E007", id="events-int"),
        pytest.param({"ENDPOINTS": [endpoint(models=True)]}, "E007", id="models-bool"),
        pytest.param({"ENDPOINTS": [endpoint(events="create")]}, "E007", id="events-str"),
        pytest.param({"TIMEOUT": 5, 1: "x", "FOO": 2}, "E002", id="mixed-key-types"),
    ],
)
def test_bad_types_are_one_error(webhooks, error_id):
    assert ids(settings_errors(webhooks)) == [f"webhooks_app.{error_id}"]


# --- django-q2 settings --------------------------------------------------------------------


def test_django_q_not_installed():
    apps = [app for app in settings.INSTALLED_APPS if app != "django_q"]
    with override_settings(INSTALLED_APPS=apps):
        messages = check_q_cluster()
    assert ids(messages) == ["webhooks_app.E023"]
    assert "django_q is not in INSTALLED_APPS" in messages[0].msg


def test_django_q_installed_by_app_config_path():
    apps = [
        "django_q.apps.DjangoQConfig" if app == "django_q" else app
        for app in settings.INSTALLED_APPS
    ]
    with override_settings(INSTALLED_APPS=apps):
        assert check_q_cluster() == []


def test_middleware_missing():
    middleware = [m for m in settings.MIDDLEWARE if "WebhookActorMiddleware" not in m]
    with override_settings(MIDDLEWARE=middleware):
        messages = check_q_cluster()
    assert ids(messages) == ["webhooks_app.W001"]
    assert "WebhookActorMiddleware is not in MIDDLEWARE" in messages[0].msg
    assert "after AuthenticationMiddleware" in (messages[0].hint or "")


def q_cluster_messages(**changes: Any) -> list[CheckMessage]:
    with override_settings(Q_CLUSTER={**settings.Q_CLUSTER, **changes}):
        return check_q_cluster()


def test_q_cluster_timeout_too_small():
    # A run claims for TASK_SECONDS (5), then waits out its last request (TIMEOUT, 5) and
    # writes it: a 15 s task timeout leaves no margin.
    messages = q_cluster_messages(timeout=15)
    assert ids(messages) == ["webhooks_app.W002"]
    assert "Q_CLUSTER['timeout'] (15s) does not leave room for a delivery run" in messages[0].msg
    assert "WEBHOOKS['TASK_SECONDS']" in (messages[0].hint or "")
    assert q_cluster_messages(timeout=20) == []


def test_q_cluster_timeout_follows_task_seconds_and_timeout():
    with override_settings(WEBHOOKS=with_changes(TASK_SECONDS=40, TIMEOUT=20)):
        messages = check_q_cluster()
    assert ids(messages) == ["webhooks_app.W002"]
    assert "up to 66s" in messages[0].msg


def test_q_cluster_retry_not_above_timeout():
    messages = q_cluster_messages(timeout=60, retry=60)
    assert ids(messages) == ["webhooks_app.W003"]
    assert "Q_CLUSTER['retry'] (60s) is not longer than its timeout (60s)" in messages[0].msg


def test_q_cluster_without_timeout_is_fine():
    cluster = {key: value for key, value in settings.Q_CLUSTER.items() if key != "timeout"}
    with override_settings(Q_CLUSTER=cluster):
        assert check_q_cluster() == []


def test_secret_keys_must_be_fernet_keys_and_the_error_names_the_entry():
    good = "c3VpdGUtb25seS1mZXJuZXQta2V5LTMyLWJ5dGVzISE="

    wrong_type = settings_errors({"SECRET_KEYS": good})
    short = settings_errors({"SECRET_KEYS": [good, "tooshort"]})

    assert ids(wrong_type) == ["webhooks_app.E031"]
    assert ids(short) == ["webhooks_app.E031"]
    assert "entry 1 is not a Fernet key" in short[0].msg
    assert "Fernet.generate_key()" in text(short[0])


def test_no_secret_keys_outside_debug_is_warning_w004(settings):
    good = "c3VpdGUtb25seS1mZXJuZXQta2V5LTMyLWJ5dGVzISE="
    settings.DEBUG = False
    with override_settings(WEBHOOKS={}):
        without = ids(check_settings())
    with override_settings(WEBHOOKS={"SECRET_KEYS": [good]}):
        configured = ids(check_settings())
    settings.DEBUG = True
    with override_settings(WEBHOOKS={}):
        in_debug = ids(check_settings())

    assert without == ["webhooks_app.W004"]
    assert configured == []
    assert in_debug == []


def test_w005_when_the_admin_index_django_finds_cannot_show_the_workers_banner(tmp_path):
    apps_after_admin = [app for app in settings.INSTALLED_APPS if app != "webhooks_app"]
    apps_after_admin.insert(apps_after_admin.index("django.contrib.admin") + 1, "webhooks_app")
    own_index = tmp_path / "plain" / "admin" / "index.html"
    own_index.parent.mkdir(parents=True)
    own_index.write_text('{% extends "admin/base_site.html" %}')
    tagged_index = tmp_path / "tagged" / "admin" / "index.html"
    tagged_index.parent.mkdir(parents=True)
    tagged_index.write_text(
        '{% extends "admin/index.html" %}{% load webhooks_admin %}'
        "{% block messages %}{% webhooks_worker_banner %}{% endblock %}"
    )

    extending_index = tmp_path / "extending" / "admin" / "index.html"
    extending_index.parent.mkdir(parents=True)
    extending_index.write_text('{% extends "admin/index.html" %}{% block sidebar %}{% endblock %}')

    def with_template_dir(directory):
        return [{**settings.TEMPLATES[0], "DIRS": [str(directory)]}]

    output = io.StringIO()
    with override_settings(INSTALLED_APPS=apps_after_admin):
        after_admin = check_admin_banner()
        call_command("check", stdout=output, stderr=output)  # registered, so it runs
    with override_settings(TEMPLATES=with_template_dir(own_index.parent.parent)):
        own = check_admin_banner()
    with override_settings(TEMPLATES=with_template_dir(tagged_index.parent.parent)):
        tagged = check_admin_banner()
    with override_settings(TEMPLATES=with_template_dir(extending_index.parent.parent)):
        extending = check_admin_banner()  # it hands over to webhooks_app's index

    assert ids(after_admin) == ["webhooks_app.W005"]
    assert "webhooks_app.W005" in output.getvalue()
    assert "django/contrib/admin/templates/admin/index.html" in after_admin[0].msg
    assert "before 'django.contrib.admin' in INSTALLED_APPS" in after_admin[0].hint
    assert ids(own) == ["webhooks_app.W005"]
    assert str(own_index) in own[0].msg
    assert tagged == []
    assert extending == []
