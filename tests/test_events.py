"""From model changes and emit() calls to Event rows: what is recorded, and when nothing is."""

import time
import uuid
from decimal import Decimal

import pytest
from django.contrib.auth.signals import user_logged_in
from django.core import serializers
from django.db import transaction
from django.test import RequestFactory, override_settings
from django.utils import timezone

from tests.factories import ArticleFactory, UserFactory, WebhookFactory
from tests.models import Account, Article, Invoice, Unwatched
from webhooks_app import claims, engine, tasks
from webhooks_app.actor import acting_as
from webhooks_app.events import UnknownEvent, emit
from webhooks_app.ids import new_event_id
from webhooks_app.models import DECLARED_INACTIVE_REASON, Delivery, Event, Webhook

# These tests look at what is recorded, never committed (no worker is woken); what is sent
# is test_delivery's business.
pytestmark = [pytest.mark.django_db, pytest.mark.portable]


def fan_out():
    """Create the deliveries of pending events, as a worker's claim does first."""
    with transaction.atomic():
        return claims.fan_out(timezone.now(), limit=1000, using="default")


@pytest.fixture
def wake_ups(monkeypatch):
    """What reaches the queue (the engine's task names, in order), coalesced as outside the
    suite's inline mode."""
    calls = []
    monkeypatch.setattr("webhooks_app.tasks._enqueue", lambda func, *args: calls.append(func))
    monkeypatch.setattr(tasks.Conf, "SYNC", False)
    monkeypatch.setattr(tasks, "_last_wake", 0.0)
    return calls


@pytest.fixture
def hook():
    return WebhookFactory()


def payloads(name=None):
    events = Event.objects.order_by("created_at")
    if name:
        events = events.filter(name=name)
    return [event.payload for event in events]


def test_create_emits_the_envelope(hook):
    article = ArticleFactory(title="Hello", price=Decimal("9.50"))

    (payload,) = payloads()
    assert list(payload) == [
        "id",
        "event",
        "model",
        "timestamp",
        "data",
        "previous",
        "changed_fields",
        "user",
    ]
    assert payload["event"] == "create"
    assert payload["model"] == "article"
    assert payload["id"].startswith("evt_")
    assert payload["timestamp"].endswith("Z")
    assert payload["data"]["id"] == article.pk
    assert payload["data"]["title"] == "Hello"
    assert payload["data"]["price"] == "9.50"
    assert payload["data"]["uid"] == str(article.uid)
    assert payload["previous"] is None
    assert payload["changed_fields"] is None
    assert payload["user"] is None
    assert Event.objects.get().pending_fanout is True
    assert Delivery.objects.count() == 0
    assert fan_out() == 1
    assert Delivery.objects.get().webhook == hook
    assert Event.objects.get().pending_fanout is False
    assert fan_out() == 0


def test_update_carries_previous_state_and_changed_fields(hook):
    article = ArticleFactory(title="Before", body="same")
    article.title = "After"
    article.save()

    (payload,) = payloads("update")
    assert payload["data"]["title"] == "After"
    assert payload["previous"]["title"] == "Before"
    assert payload["previous"]["body"] == "same"
    assert payload["changed_fields"] == ["title"]


def stored_mode(settings):
    models = {**settings.WEBHOOKS["MODELS"]}
    models["tests.Article"] = {**models["tests.Article"], "previous": "stored"}
    settings.WEBHOOKS = {**settings.WEBHOOKS, "MODELS": models}


def test_previous_is_what_the_instance_was_loaded_with_by_default(hook, django_assert_num_queries):
    article = ArticleFactory(title="Loaded")
    loaded = Article.objects.get(pk=article.pk)
    loaded.title = "Mine"

    # The UPDATE only: no read of the stored row (and the Event waits for the test's
    # transaction to be looked at: outbox).
    with django_assert_num_queries(1):
        loaded.save()

    (payload,) = payloads("update")
    assert payload["previous"]["title"] == "Loaded"
    assert payload["changed_fields"] == ["title"]


def test_each_save_is_compared_with_the_one_before(hook):
    article = ArticleFactory(title="One")
    for title in ("Two", "Three"):
        article.title = title
        article.save()

    assert [(p["previous"]["title"], p["data"]["title"]) for p in payloads("update")] == [
        ("One", "Two"),
        ("Two", "Three"),
    ]


def test_previous_keeps_the_old_value_of_each_encoded_field_that_changed(hook):
    """Values encoded for the payload (a UUID, a Decimal, a datetime) are encoded once
    when unchanged; a changed one must still show its old value in ``previous``."""
    article = ArticleFactory(price=Decimal("1.50"), published_at=None)
    loaded = Article.objects.get(pk=article.pk)
    old_uid = str(loaded.uid)
    loaded.uid = uuid.uuid4()
    loaded.price = Decimal("2.25")
    loaded.save()
    loaded.title = "only the title"
    loaded.save()

    first, second = payloads("update")
    assert first["previous"]["uid"] == old_uid
    assert first["previous"]["price"] == "1.50"
    assert first["data"]["uid"] == str(loaded.uid)
    assert first["data"]["price"] == "2.25"
    assert sorted(first["changed_fields"]) == ["price", "uid"]
    assert second["previous"]["uid"] == second["data"]["uid"] == str(loaded.uid)
    assert second["previous"]["price"] == second["data"]["price"] == "2.25"
    assert second["changed_fields"] == ["title"]


def test_a_new_instance_copies_nothing_until_its_first_save(hook):
    """A create needs no ``previous``: only a loaded or saved instance keeps a snapshot."""
    article = Article(title="New", body="b")
    assert not [name for name in vars(article) if name.startswith("_webhooks")]

    article.save()
    article.title = "Changed"
    article.save()

    (payload,) = payloads("update")
    assert payload["previous"]["title"] == "New"
    assert payload["changed_fields"] == ["title"]


def test_an_instance_built_by_hand_is_compared_with_the_stored_row(hook):
    article = ArticleFactory(title="Stored", body="kept")
    by_hand = Article(pk=article.pk, uid=article.uid, title="Mine", body="kept")
    by_hand.save()

    (payload,) = payloads("update")
    assert payload["previous"]["title"] == "Stored"
    assert payload["changed_fields"] == ["title"]


def test_an_instance_loaded_without_a_payload_field_reads_the_stored_row(hook):
    article = ArticleFactory(title="Stored", body="full body")
    partial = Article.objects.only("id", "title").get(pk=article.pk)
    partial.title = "Mine"
    partial.save()

    (payload,) = payloads("update")
    assert payload["previous"]["title"] == "Stored"
    assert payload["previous"]["body"] == "full body"


def test_with_previous_stored_a_stale_instance_is_compared_with_what_was_stored(hook, settings):
    stored_mode(settings)
    article = ArticleFactory(title="Stored")
    stale = Article.objects.get(pk=article.pk)
    Article.objects.filter(pk=article.pk).update(title="Changed elsewhere")
    stale.title = "Mine"
    stale.save()

    (payload,) = payloads("update")
    assert payload["previous"]["title"] == "Changed elsewhere"


def test_by_default_a_stale_instance_is_compared_with_what_it_was_loaded_with(hook):
    article = ArticleFactory(title="Stored")
    stale = Article.objects.get(pk=article.pk)
    Article.objects.filter(pk=article.pk).update(title="Changed elsewhere")
    stale.title = "Mine"
    stale.save()

    (payload,) = payloads("update")
    assert payload["previous"]["title"] == "Stored"


def test_nothing_is_read_for_an_update_nobody_receives(django_assert_num_queries):
    WebhookFactory(events=["create"])
    article = ArticleFactory()
    article.title = "changed"

    with django_assert_num_queries(1):  # the UPDATE itself
        article.save()
    assert payloads("update") == []


def test_update_that_changes_nothing_emits_nothing(hook):
    article = ArticleFactory()
    article.save()

    assert payloads("update") == []


def test_update_of_excluded_field_only_emits_nothing(hook):
    invoice = Invoice.objects.create(number="A-1", amount=Decimal("10"), issued_on="2026-01-02")
    invoice.internal_note = "not in the payload"
    invoice.save()

    assert [p["event"] for p in payloads()] == ["create"]
    assert "internal_note" not in payloads()[0]["data"]


def test_delete_carries_the_last_state(hook):
    article = ArticleFactory(title="Gone soon")
    pk = article.pk
    article.delete()

    (payload,) = payloads("delete")
    assert payload["data"]["id"] == pk
    assert payload["data"]["title"] == "Gone soon"
    assert payload["previous"] == payload["data"]
    assert Event.objects.get(name="delete").object_id == str(pk)


def test_publish_and_unpublish_follow_status_transitions(hook):
    article = ArticleFactory(status="draft")
    article.status = "published"
    article.save()
    article.title = "Edited while published"
    article.save()
    article.status = "draft"
    article.save()
    ArticleFactory(status="published")

    names = [p["event"] for p in payloads()]
    assert names == [
        "create",
        "update",
        "publish",
        "update",
        "update",
        "unpublish",
        "create",
        "publish",
    ]
    publish = payloads("publish")[0]
    assert publish["previous"]["status"] == "draft"
    assert publish["data"]["status"] == "published"


def test_sensitive_fields_never_leave_by_default(hook):
    Account.objects.create(email="a@example.com", password="hash", api_token="t", client_secret="s")

    (payload,) = payloads()
    assert set(payload["data"]) == {"id", "email", "plan", "preferences"}


def test_unwatched_models_emit_nothing(hook):
    Unwatched.objects.create(name="x")

    assert Event.objects.count() == 0


def test_fixture_loading_emits_nothing(hook):
    article = Article(pk=4242, title="From a fixture")
    fixture = serializers.serialize("json", [article])
    for obj in serializers.deserialize("json", fixture):
        obj.save()

    assert Article.objects.filter(pk=4242).exists()
    assert Event.objects.count() == 0


def test_rolled_back_write_records_nothing(hook, django_capture_on_commit_callbacks):
    def write_then_fail():
        with transaction.atomic():
            ArticleFactory()
            raise RuntimeError("rollback")

    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(RuntimeError):
        write_then_fail()

    assert callbacks == []
    assert Event.objects.count() == 0
    assert Delivery.objects.count() == 0


def test_nothing_is_recorded_without_subscribers():
    ArticleFactory()

    assert Event.objects.count() == 0


def test_disabled_switch_records_nothing(hook):
    with override_settings(WEBHOOKS={"ENABLED": False, "MODELS": ["tests.Article"]}):
        ArticleFactory()

    assert Event.objects.count() == 0


def test_an_event_for_a_disabled_webhook_is_kept():
    WebhookFactory(is_active=False)
    ArticleFactory()

    assert Event.objects.count() == 1  # its delivery is made skipped, to resend on enabling


def test_an_endpoint_declared_inactive_in_settings_receives_nothing():
    WebhookFactory(
        is_active=False, managed_by_settings=True, disabled_reason=DECLARED_INACTIVE_REASON
    )
    ArticleFactory()

    assert Event.objects.count() == 0


def test_actor_from_context_manager(hook):
    user = UserFactory(first_name="Grace", last_name="Hopper", email="grace@example.com")
    with acting_as(user):
        ArticleFactory()

    assert payloads("create")[0]["user"] == {
        "id": user.pk,
        "name": "Grace Hopper",
        "email": "grace@example.com",
    }


def test_actor_from_request_middleware(hook):
    from webhooks_app.middleware import WebhookActorMiddleware

    user = UserFactory()
    request = RequestFactory().post("/")
    request.user = user
    middleware = WebhookActorMiddleware(lambda request: ArticleFactory())
    middleware(request)
    ArticleFactory()  # outside the request: nobody

    users = [p["user"] for p in payloads("create")]
    assert users[0]["id"] == user.pk
    assert users[1] is None


def test_anonymous_actor_is_null(hook):
    from django.contrib.auth.models import AnonymousUser

    with acting_as(AnonymousUser()):
        ArticleFactory()

    assert payloads("create")[0]["user"] is None


def test_user_serializer_setting(hook, settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "USER_SERIALIZER": "tests.test_events.user_as_id"}
    user = UserFactory()
    with acting_as(user):
        ArticleFactory()

    assert payloads("create")[0]["user"] == {"id": f"user_{user.pk}"}


def user_as_id(user):
    return {"id": f"user_{user.pk}"}


def test_custom_event_through_emit(hook):
    user = UserFactory()
    event = emit("backup.complete", data={"size": 1.5, "files": 3}, user=user)

    assert event is not None
    payload = event.payload
    assert payload["event"] == "backup.complete"
    assert payload["model"] is None
    assert payload["data"] == {"size": 1.5, "files": 3}
    assert payload["user"]["id"] == user.pk


def test_unknown_custom_event_is_refused(hook):
    with pytest.raises(UnknownEvent, match=r"backup\.compleet"):
        emit("backup.compleet", data={})


def test_user_create_and_login_events(hook):
    user = UserFactory()
    user_logged_in.send(sender=type(user), request=None, user=user)

    created, login = payloads("user.create"), payloads("user.login")
    assert created[0]["data"]["id"] == user.pk
    assert created[0]["model"] == "user"
    assert "password" not in created[0]["data"]
    assert login[0]["user"]["id"] == user.pk


def test_user_events_are_opt_in(hook, settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "USER_EVENTS": []}
    UserFactory()

    assert payloads("user.create") == []


def test_one_event_many_webhooks_one_body():
    first, second = WebhookFactory(), WebhookFactory()
    ArticleFactory()
    fan_out()

    event = Event.objects.get()
    assert {d.webhook for d in event.deliveries.all()} == {first, second}


@pytest.mark.parametrize(
    ("events", "models", "delivered"),
    [
        ([], [], {"create", "update", "backup.complete", "user.create"}),
        (["*"], [], {"create", "update", "backup.complete", "user.create"}),
        (["create"], [], {"create"}),
        (["user.*"], [], {"user.create"}),
        (["backup.*", "update"], [], {"update", "backup.complete"}),
        ([], ["article"], {"create", "update"}),
        (["update"], ["invoice"], set()),
    ],
)
def test_subscription_matching(events, models, delivered):
    hook = WebhookFactory(events=events, models=models)
    article = ArticleFactory()
    article.title = "changed"
    article.save()
    emit("backup.complete", data={})
    UserFactory()
    fan_out()

    received = {d.event.name for d in Delivery.objects.filter(webhook=hook)}
    assert received == delivered


def test_one_transaction_wakes_the_workers_once_after_commit(
    hook, wake_ups, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        for _ in range(5):
            ArticleFactory()
        assert wake_ups == []

    assert wake_ups == [tasks.RUN_TASK]
    assert Event.objects.filter(pending_fanout=True).count() == 5


def test_rolled_back_savepoint_drops_only_its_events(
    hook, wake_ups, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        kept = ArticleFactory()
        try:
            with transaction.atomic():
                ArticleFactory()
                raise RuntimeError
        except RuntimeError:
            pass
        later = ArticleFactory()

    assert wake_ups == [tasks.RUN_TASK]
    assert fan_out() == 2
    delivered_objects = set(Delivery.objects.values_list("event__object_id", flat=True))
    assert delivered_objects == {str(kept.pk), str(later.pk)}


def test_a_savepoint_rolled_back_with_the_only_event_still_leaves_a_wake_up_for_the_next(
    hook, wake_ups, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        try:
            with transaction.atomic():
                ArticleFactory()
                raise RuntimeError
        except RuntimeError:
            pass
        ArticleFactory()

    assert wake_ups == [tasks.RUN_TASK]


def test_wake_ups_from_one_process_are_coalesced(hook, wake_ups):
    for _ in range(20):
        tasks.wake()

    # A burst of commits costs one message; the run it starts lingers long enough to find
    # the rows committed after it was sent.
    assert wake_ups == [tasks.RUN_TASK]
    assert tasks.WAKE_COALESCE_SECONDS < engine.LINGER_SECONDS - engine.POLL_SECONDS


def test_a_json_field_changed_in_place_keeps_its_previous_value(hook):
    account = Account.objects.create(email="a@example.com", preferences={"theme": "dark"})
    loaded = Account.objects.get(pk=account.pk)
    loaded.preferences["theme"] = "light"  # the dict the instance was loaded with
    loaded.save()

    (payload,) = payloads("update")
    assert payload["previous"]["preferences"] == {"theme": "dark"}
    assert payload["data"]["preferences"] == {"theme": "light"}
    assert payload["changed_fields"] == ["preferences"]


def test_this_process_sees_a_new_webhook_at_once():
    ArticleFactory()  # loads this process's copy: nobody subscribed
    assert Event.objects.count() == 0
    WebhookFactory()  # post_save drops the copy

    ArticleFactory()
    assert Event.objects.count() == 1


def test_a_change_this_process_did_not_make_is_seen_when_its_copy_expires(settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "SUBSCRIPTION_CACHE_SECONDS": 0.3}
    ArticleFactory()
    # bulk_create sends no signal: as a webhook created by another process.
    Webhook.objects.bulk_create([Webhook(name="elsewhere", url="https://example.com/hook")])
    ArticleFactory()
    assert Event.objects.count() == 0

    time.sleep(0.4)
    ArticleFactory()
    assert Event.objects.count() == 1


def test_a_fan_out_reads_the_webhooks_as_they_are_then(hook):
    """The worker's read of the receiving webhooks is compiled once (statements.instances)
    but runs every time: a change sent by no signal (QuerySet.update, another process)
    shapes the next fan-out, and the webhooks come back as the ORM builds them."""
    from webhooks_app import subscriptions

    other = WebhookFactory(events=["update"], headers={"X-Team": "blue"})
    read = subscriptions.receiving_webhooks("default")
    expected = list(Webhook.objects.receiving().order_by("id"))
    assert [w.pk for w in read] == [w.pk for w in expected] == [hook.pk, other.pk]
    for got, want in zip(read, expected, strict=True):
        assert got.__dict__.keys() == want.__dict__.keys()
        assert {k: v for k, v in got.__dict__.items() if k != "_state"} == {
            k: v for k, v in want.__dict__.items() if k != "_state"
        }
        assert got.secret  # decrypted, as the ORM gives it
        assert got.secret == want.secret
        assert got._state.db == "default"
        assert not got._state.adding

    ArticleFactory()
    Webhook.objects.filter(pk=hook.pk).update(is_active=False, disabled_reason="Paused")
    Webhook.objects.filter(pk=other.pk).update(events=["create"])
    fan_out()
    rows = {row.webhook_id: row for row in Delivery.objects.all()}
    assert rows[hook.pk].status == "skipped"
    assert rows[other.pk].status == "pending"


def test_event_ids_are_prefixed_version_7_uuids_in_time_order():
    ids = []
    for _ in range(3):
        ids.append(new_event_id())
        time.sleep(0.002)  # a new millisecond: the order is the time's, not chance's

    for event_id in ids:
        assert event_id.startswith("evt_")
        assert len(event_id) == 36
        parsed = uuid.UUID(event_id.removeprefix("evt_"))
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert abs(int(parsed.hex[:12], 16) - time.time() * 1000) < 60_000
    assert ids == sorted(ids)
