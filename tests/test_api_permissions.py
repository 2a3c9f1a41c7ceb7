"""Who may use which route: every route against every kind of caller.

anonymous: 401 (Basic auth is the suite's first authenticator); an ordinary user while the API
is staff-only: 403; the owner (with WEBHOOKS["API_OWNER_SCOPED"]): allowed on their own; another
owner: 404 on objects that are not theirs; staff: allowed; staff without the resend
permissions: 403 on test, rotate-secret, recover and retry.
"""

import datetime
import json

import pytest
from django.utils import timezone

from tests.factories import WebhookFactory
from webhooks_app.models import Delivery, DeliveryStatus, Event

pytest_plugins = ["tests.api_support"]
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_settings")]

SINCE = "2000-01-01T00:00:00Z"
# name, method, path, body, success status, kind (list | create | object | write | resend)
ROUTES = [
    ("webhook-list", "get", "/api/webhooks/", None, 200, "list"),
    ("webhook-create", "post", "/api/webhooks/", {"url": "https://n.example.com/"}, 201, "create"),
    ("webhook-retrieve", "get", "/api/webhooks/{hook}/", None, 200, "object"),
    (
        "webhook-update",
        "put",
        "/api/webhooks/{hook}/",
        {"url": "https://u.example.com/"},
        200,
        "write",
    ),
    ("webhook-patch", "patch", "/api/webhooks/{hook}/", {"name": "renamed"}, 200, "write"),
    ("webhook-delete", "delete", "/api/webhooks/{hook}/", None, 204, "write"),
    ("webhook-test", "post", "/api/webhooks/{hook}/test/", {}, 200, "resend"),
    ("webhook-rotate", "post", "/api/webhooks/{hook}/rotate-secret/", {}, 200, "resend"),
    ("webhook-recover", "post", "/api/webhooks/{hook}/recover/", {"since": SINCE}, 202, "resend"),
    ("webhook-deliveries", "get", "/api/webhooks/{hook}/deliveries/", None, 200, "object"),
    ("delivery-list", "get", "/api/deliveries/", None, 200, "list"),
    ("delivery-retrieve", "get", "/api/deliveries/{delivery}/", None, 200, "object"),
    ("delivery-retry", "post", "/api/deliveries/{delivery}/retry/", None, 202, "resend"),
    ("event-list", "get", "/api/events/", None, 200, "list"),
    ("event-retrieve", "get", "/api/events/{event}/", None, 200, "object"),
    ("event-types", "get", "/api/event-types/", None, 200, "list"),
]
ROLES = ["anonymous", "ordinary", "owner", "other_owner", "staff", "staff_without_perms"]


def expected_status(role, success, kind):
    if role == "anonymous":
        return 401
    if role == "ordinary":
        return 403
    if role == "other_owner" and kind in ("object", "write", "resend"):
        return 404
    if role == "staff_without_perms" and kind in ("create", "write", "resend"):
        return 403
    return success


@pytest.fixture
def objects(owner):
    # Nothing listens on port 9: a test send is refused at once (and is still a 200 result).
    hook = WebhookFactory(url="http://127.0.0.1:9/closed", owner=owner)
    created = timezone.now() - datetime.timedelta(hours=1)
    event = Event.objects.create(name="backup.complete", body=json.dumps({"n": 1}))
    delivery = Delivery.objects.create(
        event=event, webhook=hook, status=DeliveryStatus.FAILED, attempts=1, created_at=created
    )
    return {"hook": hook.pk, "delivery": delivery.pk, "event": event.pk}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    ("method", "path", "body", "success", "kind"),
    [route[1:] for route in ROUTES],
    ids=[route[0] for route in ROUTES],
)
def test_permission_matrix(
    request, api_settings, client_for, objects, role, method, path, body, success, kind
):
    if role != "ordinary":
        api_settings.WEBHOOKS = {**api_settings.WEBHOOKS, "API_OWNER_SCOPED": True}
    user = {
        "anonymous": None,
        "ordinary": "owner",
        "owner": "owner",
        "other_owner": "other_owner",
        "staff": "staff",
        "staff_without_perms": "staff_without_perms",
    }[role]
    client = client_for(request.getfixturevalue(user) if user else None)

    response = getattr(client, method)(path.format(**objects), body, format="json")

    assert response.status_code == expected_status(role, success, kind), response.content


def test_anonymous_gets_a_basic_auth_challenge(client_for):
    response = client_for(None).get("/api/webhooks/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Basic")


def test_other_owners_see_empty_lists_not_the_owners_rows(
    owner_scoped, objects, client_for, other_owner
):
    client = client_for(other_owner)
    for path in ("/api/webhooks/", "/api/deliveries/", "/api/events/"):
        assert client.get(path).json()["results"] == [], path


def test_superusers_have_every_resend_permission(
    api_settings, objects, client_for, django_user_model
):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client = client_for(root)
    response = client.post(f"/api/webhooks/{objects['hook']}/rotate-secret/", {}, format="json")
    assert response.status_code == 200
    assert client.post(f"/api/deliveries/{objects['delivery']}/retry/").status_code == 202


def test_staff_without_the_permission_is_told_which(objects, client_for, staff_without_perms):
    response = client_for(staff_without_perms).post(
        f"/api/webhooks/{objects['hook']}/test/", {}, format="json"
    )
    assert response.status_code == 403
    assert "webhooks_app.test_webhook" in response.json()["detail"]
