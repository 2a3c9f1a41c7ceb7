"""Rules for a webhook's fields, each written once and used by every way a webhook is made.

Each rule takes a value and returns ``None`` when it is acceptable, or the message saying
which rule it broke. The system checks (settings endpoints), the API serializer and the admin
form all call these, so they cannot drift apart.
"""

from __future__ import annotations

import math
from typing import Any

MAX_IN_FLIGHT_LIMIT = 10_000
RATE_LIMIT_MAX = 10_000.0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def max_in_flight_error(value: Any) -> str | None:
    """Requests in flight to one endpoint at once: a whole number from 1 to 10,000."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 1 <= value <= MAX_IN_FLIGHT_LIMIT
    ):
        return f"must be a whole number from 1 to {MAX_IN_FLIGHT_LIMIT:,}."
    return None


def rate_limit_error(value: Any) -> str | None:
    """Requests per second to one endpoint: a number above 0, at most 10,000 (0.5 = one
    request every two seconds)."""
    if value is None:
        return None
    if not _is_number(value) or not 0 < value <= RATE_LIMIT_MAX:
        return "must be a number of requests per second above 0 and at most 10,000."
    return None
