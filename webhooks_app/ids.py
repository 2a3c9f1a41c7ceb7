"""Public identifiers: prefixed, time-ordered, URL-safe.

Time-ordered ids (UUIDv7 layout) keep new rows at the right edge of the primary-key index,
which matters for a table that only grows; the prefix tells a human what an id is at a glance,
as Stripe's and Svix's do.
"""

from __future__ import annotations

import os
import time


def _uuid7_int() -> int:
    """A version-7 UUID as an integer: 48 bits of Unix milliseconds, then random bits (RFC
    9562). No uuid.UUID object: every watched save makes one id."""
    unix_ms = time.time_ns() // 1_000_000
    random_bits = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & (2**48 - 1)) << 80
    value |= 0x7 << 76  # version
    value |= (random_bits >> 68 & 0xFFF) << 64  # rand_a
    value |= 0b10 << 62  # variant
    value |= random_bits & (2**62 - 1)  # rand_b
    return value


def new_event_id() -> str:
    return f"evt_{_uuid7_int():032x}"
