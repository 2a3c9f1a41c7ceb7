"""System checks for the API's settings (E024-E026)."""

from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from webhooks_app.checks import check_settings


def errors(**changes: Any) -> list[tuple[str, str]]:
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, **changes}):
        return [(m.id or "", f"{m.msg} {m.hint or ''}") for m in check_settings()]


def test_valid_api_settings_pass():
    assert (
        errors(
            API_OWNER_SCOPED=True,
            ALLOW_HTTP=True,
            ALLOWED_TARGETS=["hooks.internal", "10.0.0.0/8", "::1", "127.0.0.1"],
            TEST_THROTTLE_RATE="5/hour",
        )
        == []
    )
    assert errors(TEST_THROTTLE_RATE=None) == []


@pytest.mark.parametrize("key", ["API_OWNER_SCOPED", "ALLOW_HTTP"])
@pytest.mark.parametrize("value", ["yes", 1, None])
def test_flags_must_be_booleans(key, value):
    ((check_id, message),) = errors(**{key: value})
    assert check_id == "webhooks_app.E024"
    assert f"WEBHOOKS['{key}']" in message


@pytest.mark.parametrize(
    "value", ["10.0.0.0/8", ["10.0.0.0/33"], ["bad host/"], [""], [5], ["a b"], ["fd00::/200"]]
)
def test_allowed_targets_must_be_hosts_or_networks(value):
    ((check_id, message),) = errors(ALLOWED_TARGETS=value)
    assert check_id == "webhooks_app.E025"
    assert "WEBHOOKS['ALLOWED_TARGETS']" in message


@pytest.mark.parametrize("value", ["10", "ten/min", "10/fortnight", 10, "10 / min", ""])
def test_throttle_rate_must_be_a_drf_rate(value):
    ((check_id, message),) = errors(TEST_THROTTLE_RATE=value)
    assert check_id == "webhooks_app.E026"
    assert "WEBHOOKS['TEST_THROTTLE_RATE']" in message


def test_api_checks_are_bound():
    with (
        override_settings(WEBHOOKS={**settings.WEBHOOKS, "ALLOW_HTTP": "yes"}),
        pytest.raises(SystemCheckError, match="E024"),
    ):
        call_command("check")
