"""Secrets and signatures, standard library only so receivers can copy this module.

Two signatures go out with every request:

* Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``): base64
  HMAC-SHA256 over ``f"{id}.{timestamp}." + body``, keyed with the base64-decoded part of a
  ``whsec_`` secret. ``standardwebhooks`` and ``svix`` verify it unchanged.
* A hex HMAC-SHA256 of the body keyed with the secret string itself (UTF-8), in a header whose
  name and prefix are configurable, because that is what most hand-written receivers check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as secrets_module
import time
from collections.abc import Iterable, Mapping

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300


class InvalidSignature(Exception):
    """The request's signature or timestamp did not verify."""


def generate_secret(num_bytes: int = 32) -> str:
    """A new ``whsec_`` secret with ``num_bytes`` random bytes (24 to 64 per the spec)."""
    return SECRET_PREFIX + base64.b64encode(secrets_module.token_bytes(num_bytes)).decode()


def standard_key(secret: str) -> bytes:
    """The HMAC key of the Standard Webhooks signature.

    For a ``whsec_`` secret it is the base64-decoded remainder, as the spec says. Secrets that
    are not in that form (``"test-secret"`` in a settings file) are used as UTF-8 bytes, so
    they still sign; such receivers must use the same rule.
    """
    if secret.startswith(SECRET_PREFIX):
        encoded = secret[len(SECRET_PREFIX) :]
        try:
            # Padding is optional in the wild; the reference libraries add it back too.
            return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode()


def sign_standard(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` entry of the ``webhook-signature`` header."""
    signed_content = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(standard_key(secret), signed_content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def standard_signature_header(
    secrets: Iterable[str], message_id: str, timestamp: int, body: bytes
) -> str:
    """The ``webhook-signature`` value: one entry per secret, space-separated (rotation)."""
    return " ".join(sign_standard(secret, message_id, timestamp, body) for secret in secrets)


def sign_hex(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``body`` keyed with the secret string itself."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_standard(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Verify a Standard Webhooks request; raise :class:`InvalidSignature` if it does not.

    ``headers`` is looked up case-insensitively. Timestamps further than ``tolerance`` seconds
    from ``now`` are rejected, which is what stops a captured request being replayed.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    try:
        message_id = lowered["webhook-id"]
        timestamp_text = lowered["webhook-timestamp"]
        signature_header = lowered["webhook-signature"]
    except KeyError as missing:
        raise InvalidSignature(f"missing header {missing.args[0]}") from None
    try:
        timestamp = int(timestamp_text)
    except ValueError:
        raise InvalidSignature("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise InvalidSignature("webhook-timestamp is outside the tolerance")
    expected = sign_standard(secret, message_id, timestamp, body).split(",", 1)[1]
    for entry in signature_header.split():
        version, _, signature = entry.partition(",")
        # Bytes, because compare_digest raises TypeError on a non-ASCII str from a header.
        if version == SIGNATURE_VERSION and hmac.compare_digest(
            signature.encode(), expected.encode()
        ):
            return
    raise InvalidSignature("no signature matched")


def verify_hex(secret: str, signature: str, body: bytes, *, prefix: str = "") -> None:
    """Verify the hex header; raise :class:`InvalidSignature` if it does not match."""
    if prefix and signature.startswith(prefix):
        signature = signature[len(prefix) :]
    if not hmac.compare_digest(signature.strip().encode(), sign_hex(secret, body).encode()):
        raise InvalidSignature("hex signature did not match")


def mask_secret(secret: str) -> str:
    """A secret as it may be shown: its prefix and last four characters."""
    if not secret:
        return ""
    prefix = SECRET_PREFIX if secret.startswith(SECRET_PREFIX) else ""
    # A short secret would be half given away by its last four characters.
    tail = secret[-4:] if len(secret) - len(prefix) >= 16 else ""
    return f"{prefix}{'•' * 8}{tail}"
