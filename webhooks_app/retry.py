"""When to try again: the retry schedule, jitter, and ``Retry-After``.

``RETRY_SCHEDULE`` is either a list of delays in seconds, one per retry (the last one repeats
when a webhook allows more retries than the list has), or an exponential rule
``{"initial": s, "factor": f, "max": s}``. Seed schedules, for example:

* immediately, 30 s, 5 min, 30 min, 2 h: ``[30, 300, 1800, 7200]`` with ``retries=4``;
* 1, 2, 4, 8, 16, 30 minutes, 10 attempts: ``{"initial": 60, "factor": 2, "max": 1800}``
  with ``retries=9``.
"""

from __future__ import annotations

import datetime
import random
from email.utils import parsedate_to_datetime
from typing import Any

from webhooks_app.conf import app_settings


def schedule_delay(retry_number: int, schedule: Any = None) -> float:
    """Seconds before retry ``retry_number`` (1 = the first retry), before jitter."""
    schedule = app_settings.RETRY_SCHEDULE if schedule is None else schedule
    if isinstance(schedule, dict):
        initial = float(schedule.get("initial", 60))
        factor = float(schedule.get("factor", 2))
        maximum = float(schedule.get("max", initial * factor**8))
        try:
            return float(min(maximum, initial * factor ** max(0, retry_number - 1)))
        except OverflowError:  # a large factor after many retries: the cap applies
            return maximum
    delays = list(schedule)
    return float(delays[min(max(retry_number, 1), len(delays)) - 1])


def with_jitter(
    delay: float, jitter: float | None = None, rng: random.Random | None = None
) -> float:
    """``delay`` moved by up to ±``jitter`` (a fraction), so retries of many deliveries that
    failed together do not all arrive together."""
    jitter = float(app_settings.RETRY_JITTER if jitter is None else jitter)
    if delay <= 0 or jitter <= 0:
        return max(0.0, delay)
    return (rng or random).uniform(delay * (1 - jitter), delay * (1 + jitter))


def retry_delay(retry_number: int) -> float:
    return with_jitter(schedule_delay(retry_number))


def parse_retry_after(value: str | None, now: datetime.datetime) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - now).total_seconds())


def bounded_retry_after(seconds: float) -> float:
    """Honour a receiver's ``Retry-After``, but never sooner than 1 s nor later than
    ``RETRY_AFTER_MAX``: a receiver must not be able to park a delivery for a year."""
    return min(max(1.0, seconds), float(app_settings.RETRY_AFTER_MAX))
