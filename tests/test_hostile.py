"""Receivers that misbehave on purpose (tests/hostile.py): each attempt ends recorded within
the webhook's timeout plus a small margin, the worker's memory stays flat, and a healthy
endpoint subscribed to the same events is served meanwhile."""

from __future__ import annotations

import os
import threading
import time

import pytest

from tests.factories import ArticleFactory, WebhookFactory
from tests.hostile import MODES, HostileReceiver
from webhooks_app import tasks
from webhooks_app.models import Delivery, DeliveryAttempt

pytestmark = [pytest.mark.django_db, pytest.mark.portable]

TIMEOUT = 2.0
MARGIN = 1.5  # seconds past the timeout an attempt may take to be recorded
MEMORY_LIMIT = 48 * 1024**2  # growth allowed while a 1 GB body or a 64 MB header comes in
# What each receiver's attempt must end as: (error class or "", HTTP status or None).
EXPECTED = {
    "hang": ("Timeout", None),
    "trickle_headers": ("Timeout", None),
    "trickle_body": ("Timeout", None),
    # Read up to RESPONSE_BODY_LIMIT, the rest never downloaded: the endpoint did answer 200.
    "huge_body": ("", 200),
    "huge_header": ("InvalidResponse", None),
    "reset": ("ConnectionError", None),
    # Redirects are not followed: a 302 is a failed attempt, retried on schedule.
    "redirect_loop": ("", 302),
}


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """The highest resident size of this process while the block runs, sampled every 10 ms."""

    def __enter__(self) -> PeakMemory:
        self.before = resident_bytes()
        self.peak = self.before
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            self.peak = max(self.peak, resident_bytes())

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.before


def test_every_mode_is_covered():
    assert set(EXPECTED) == set(MODES)


@pytest.mark.parametrize("mode", MODES)
def test_a_hostile_receiver_ends_recorded_in_time_with_flat_memory(receiver, mode):
    hostile = HostileReceiver(mode)
    try:
        bad = WebhookFactory(url=hostile.url, timeout=TIMEOUT)
        WebhookFactory(url=receiver.url)
        ArticleFactory()
        tasks.run()  # warm: pools and the sender loop exist before memory is measured
        DeliveryAttempt.objects.all().delete()
        Delivery.objects.update(status="succeeded")
        receiver.requests.clear()
        connections_before = hostile.connections

        ArticleFactory()
        started = time.monotonic()
        with PeakMemory() as memory:
            tasks.run()
        elapsed = time.monotonic() - started
    finally:
        hostile.close()

    attempt = DeliveryAttempt.objects.get(delivery__webhook=bad)
    error_class, status = EXPECTED[mode]
    assert (attempt.error_class, attempt.response_status) == (error_class, status), (
        attempt.error_message
    )
    assert attempt.duration_ms < (TIMEOUT + MARGIN) * 1000
    assert elapsed < TIMEOUT + MARGIN
    assert memory.growth < MEMORY_LIMIT, f"{memory.growth / 1024**2:.0f} MB"
    # The healthy endpoint was not held up by the hostile one.
    assert len(receiver.requests) == 1
    assert receiver.requests[0].received_at - (time.time() - elapsed) < 1.0
    if mode == "huge_body":
        assert len(attempt.response_body) <= 16384
        assert hostile.bytes_sent < 256 * 1024**2  # we stopped reading; the rest never came
    if mode == "redirect_loop":
        assert hostile.connections - connections_before == 1  # the Location was not followed
        assert Delivery.objects.get(pk=attempt.delivery_id).status == "pending"  # retried
