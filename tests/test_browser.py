"""The admin in a real headless Chromium: find a failed delivery, retry it, see it succeed.

Uses Debian's ``chromium`` (``/usr/bin/chromium``) driven by Playwright; ``playwright
install`` is never needed. The admin is served by Django's live-server thread with the
suite's settings (queue in sync mode, so the retry runs inside the request that asks for it)
and the admin's own static files, so the screenshots look like the real thing.

Screenshots go to ``tests/_artifacts/screenshots`` or to ``$WEBHOOKS_SCREENSHOTS_DIR``;
``docs/admin.md`` shows copies made with ``WEBHOOKS_SCREENSHOTS_DIR=docs/images``.
"""

from __future__ import annotations

import datetime
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.test.testcases import LiveServerThread

from tests.factories import ArticleFactory, WebhookFactory
from tests.receiver import Response
from webhooks_app.models import Delivery, DeliveryStatus

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(
    os.environ.get("WEBHOOKS_SCREENSHOTS_DIR")
    or Path(__file__).resolve().parent / "_artifacts" / "screenshots"
)


def _require_browser() -> None:
    """Skip with a reason on a developer machine without Chromium; fail in CI."""
    missing = []
    if not (shutil.which("chromium") or Path(CHROMIUM).exists()):
        missing.append("Debian's chromium (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[test]')")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(reason + "; .ci/run installs chromium", pytrace=False)
        pytest.skip(reason)


@pytest.fixture
def live_admin(transactional_db, settings) -> Iterator[str]:
    """The test project over HTTP, serving the admin's CSS and JavaScript too."""
    settings.STATIC_URL = "/static/"
    settings.MEDIA_URL = "/media/"
    server = LiveServerThread("127.0.0.1", StaticFilesHandler, port=0)
    server.daemon = True
    server.start()
    server.is_ready.wait()
    if server.error:
        raise server.error
    yield f"http://127.0.0.1:{server.port}"
    server.terminate()


@pytest.fixture
def page(live_admin, monkeypatch):
    _require_browser()
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread, which makes Django refuse ORM
    # calls from the test itself; the test's queries are ordinary blocking ones.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 760})
        context.set_default_timeout(15_000)
        yield context.new_page()
        context.close()
        browser.close()


def shoot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def test_operator_finds_a_failed_delivery_and_retries_it(live_admin, page, receiver):
    get_user_model().objects.create_superuser("admin", "admin@example.com", "admin")
    hook = WebhookFactory(name="Customer X", url=receiver.url, retries=0)
    WebhookFactory(name="Analytics", url=receiver.url, events=["create"])
    receiver.default = Response(200, b'{"received": true}')
    for title in ("Spring sale", "Opening hours"):
        ArticleFactory(title=title)
    hook.events = ["update"]
    hook.save()
    article = ArticleFactory(title="Draft")
    # The endpoint is down for one request: Customer X's delivery fails for good.
    receiver.queue(Response(500, b'{"error": "database unavailable"}'))
    article.title = "Price list 2026"
    article.save()
    failed = Delivery.objects.get(status=DeliveryStatus.FAILED)
    assert failed.webhook == hook

    page.goto(f"{live_admin}/admin/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin")
    page.click("input[type=submit]")
    page.wait_for_selector("#content-main")

    page.goto(f"{live_admin}/admin/webhooks_app/webhook/")
    shoot(page, "webhooks-list")

    page.goto(f"{live_admin}/admin/webhooks_app/delivery/")
    page.click("#changelist-filter a:text-is('Failed')")
    page.wait_for_url("**status__exact=failed**")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    assert "failed" in rows.first.inner_text().lower()
    shoot(page, "deliveries-failed")

    rows.first.locator("th a").click()
    page.wait_for_selector("#webhooks-attempts")
    assert "HTTP 500" in page.inner_text("#webhooks-attempts")
    assert "database unavailable" in page.inner_text("#webhooks-attempts")
    shoot(page, "delivery-failed")

    page.click("#webhooks-retry-now")
    page.wait_for_selector("ul.messagelist")
    assert "Queued 1 delivery" in page.inner_text("ul.messagelist")
    for _ in range(20):  # sync queue: done already; a real cluster would take a moment
        if "Succeeded" in page.inner_text(".field-status_display"):
            break
        page.wait_for_timeout(250)
        page.reload()
    assert "Succeeded" in page.inner_text(".field-status_display")
    assert "HTTP 200" in page.inner_text("#webhooks-attempts")
    page.locator("#webhooks-attempts").scroll_into_view_if_needed()
    shoot(page, "delivery-retried")

    failed.refresh_from_db()
    assert failed.status == DeliveryStatus.SUCCEEDED
    assert failed.attempts == 2

    page.goto(f"{live_admin}/admin/webhooks_app/event/{failed.event_id}/change/")
    page.wait_for_selector("#webhooks-diff")
    shoot(page, "event-diff")

    page.goto(f"{live_admin}/admin/")
    page.click("a:text-is('Health overview')")
    page.wait_for_selector("#webhooks-success-chart")
    shoot(page, "health")


def test_the_3am_path_from_the_banner_to_a_delivered_retry(live_admin, page, receiver):
    """A failing webhook and no worker running: the banner says so, the webhook page says
    why in plain words and when the next attempt is, the URL is fixed, a retry delivers."""
    get_user_model().objects.create_superuser("admin", "admin@example.com", "admin")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()  # nothing listens there: every attempt is refused
    # Subscribed to creates only: the admin's own log-in (user.login) must not set off a
    # delivery run in this sync-mode test while the operator looks around.
    hook = WebhookFactory(
        name="Customer X",
        url=f"http://127.0.0.1:{dead_port}/hook",
        retries=3,
        events=["create"],
    )
    ArticleFactory(title="Order 1001")  # attempted at once (sync queue): refused, retrying
    failing = Delivery.objects.get()
    assert (failing.status, failing.attempts) == (DeliveryStatus.PENDING, 1)
    # Overdue, and no worker to send it: what the operator is woken up for.
    Delivery.objects.filter(pk=failing.pk).update(
        next_attempt_at=failing.next_attempt_at - datetime.timedelta(minutes=2)
    )

    page.goto(f"{live_admin}/admin/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin")
    page.click("input[type=submit]")
    banner = page.wait_for_selector("#webhooks-workers-down")
    assert "no worker seen" in banner.inner_text()
    shoot(page, "index-no-worker")

    page.goto(f"{live_admin}/admin/webhooks_app/webhook/")
    page.click("a:text-is('Customer X')")
    recent = page.wait_for_selector("#webhooks-recent")
    assert f"Connection refused (127.0.0.1:{dead_port})" in recent.inner_text()
    assert "Retrying" in recent.inner_text()
    page.locator("#webhooks-recent").scroll_into_view_if_needed()
    shoot(page, "webhook-failing")

    page.click(f"#webhooks-recent a:text-is('{failing.pk}')")
    page.wait_for_selector("#webhooks-attempts")
    assert "Connection refused" in page.inner_text("#webhooks-attempts")
    status = page.inner_text(".field-status_display")
    assert "Retrying" in status
    assert "due since 2 min ago" in status  # overdue: no worker is sending
    assert page.get_attribute(".field-status_display time", "title").endswith(" UTC")
    shoot(page, "delivery-retrying")

    # The customer moved their endpoint: fix the URL, then retry.
    page.goto(f"{live_admin}/admin/webhooks_app/webhook/{hook.pk}/change/")
    page.fill("#id_url", receiver.url)
    page.click("input[name=_save]")
    page.wait_for_selector("ul.messagelist")
    page.goto(f"{live_admin}/admin/webhooks_app/delivery/{failing.pk}/change/")
    page.click("#webhooks-retry-now")
    page.wait_for_selector("ul.messagelist")
    page.reload()
    assert "Succeeded" in page.inner_text(".field-status_display")
    assert "HTTP 200" in page.inner_text("#webhooks-attempts")
    shoot(page, "delivery-delivered")
    assert len(receiver.requests) == 1

    # A new webhook: its secret is on the page once, and masked from then on.
    page.goto(f"{live_admin}/admin/webhooks_app/webhook/add/")
    page.fill("#id_name", "Billing")
    page.fill("#id_url", receiver.url)
    page.click("input[name=_save]")
    shown = page.wait_for_selector("#webhooks-new-secret").inner_text()
    created = hook.__class__.objects.get(name="Billing")
    assert shown == created.secret
    shoot(page, "webhook-created-secret")
    page.goto(f"{live_admin}/admin/webhooks_app/webhook/{created.pk}/change/")
    assert created.secret not in page.content()
