"""The OpenAPI schema: it validates, and a property-based run against it finds no 5xx."""

import base64
import datetime
import json

import pytest
import schemathesis
import yaml
from django.core import signals
from django.core.management import call_command
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, given, settings

from tests.factories import WebhookFactory
from webhooks_app import delivery
from webhooks_app.models import Delivery, DeliveryStatus, Event

pytest_plugins = ["tests.api_support"]
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_settings")]


def test_schema_is_served_and_lists_every_route(client):
    response = client.get("/api/schema/?format=json")

    assert response.status_code == 200
    paths = set(json.loads(response.content)["paths"])
    assert {
        "/api/webhooks/",
        "/api/webhooks/{id}/",
        "/api/webhooks/{id}/test/",
        "/api/webhooks/{id}/rotate-secret/",
        "/api/webhooks/{id}/recover/",
        "/api/webhooks/{webhook_pk}/deliveries/",
        "/api/deliveries/",
        "/api/deliveries/{id}/",
        "/api/deliveries/{id}/retry/",
        "/api/events/",
        "/api/events/{id}/",
        "/api/event-types/",
    } <= paths


def test_schema_validates_without_warnings(tmp_path):
    target = tmp_path / "schema.yaml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))

    schema = yaml.safe_load(target.read_text())
    assert schema["openapi"].startswith("3.")
    webhook = schema["components"]["schemas"]["Webhook"]
    assert "secret" in webhook["properties"]
    parameters = schema["paths"]["/api/deliveries/"]["get"]["parameters"]
    assert {"status", "status_class", "event", "model", "webhook", "created_after", "cursor"} <= {
        p["name"] for p in parameters
    }


def fake_send(request):
    """No fuzzed webhook may reach the network: every send gets a canned answer."""
    return delivery.AttemptResult(started_at=timezone.now(), duration_ms=1, status_code=204)


@pytest.fixture
def wsgi_app():
    """The project's WSGI app, run as Django's test client runs it: a request's start and end
    must not close the connection that holds the test's transaction."""
    for signal in (signals.request_started, signals.request_finished):
        signal.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        for signal in (signals.request_started, signals.request_finished):
            signal.connect(close_old_connections)


def test_property_based_run_against_the_schema_finds_no_server_errors(
    monkeypatch, django_user_model, wsgi_app
):
    monkeypatch.setattr("webhooks_app.http.send", fake_send)
    django_user_model.objects.create_superuser("fuzz", "fuzz@example.com", "fuzz")
    auth = {"Authorization": "Basic " + base64.b64encode(b"fuzz:fuzz").decode()}
    # Something for the detail routes to find (ids 1 are what the generator tries first).
    hook = WebhookFactory(url="https://hooks.example.com/in")
    event = Event.objects.create(name="backup.complete", body="{}")
    Delivery.objects.create(
        event=event,
        webhook=hook,
        status=DeliveryStatus.FAILED,
        created_at=timezone.now() - datetime.timedelta(hours=1),
    )
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app)
    failures = []
    codes = []

    def fuzz(operation):
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def call(case):
            response = case.call(headers=auth)
            codes.append(response.status_code)
            if response.status_code >= 500:
                failures.append((operation.label, case.body, case.query, response.text[:500]))

        call()

    labels = []
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        fuzz(operation)

    assert len(labels) >= 16
    assert failures == []
    # The run got past validation too, not only to 400s and 404s.
    assert any(200 <= code < 300 for code in codes)
