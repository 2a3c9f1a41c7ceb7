"""How the demo's receiver checks a request, as a third-party receiver would.

Plain functions of (secret, headers, body) with no Django imports, so they can be tested on
their own and read as a recipe. Each returns ``None`` when the request verifies and a short
reason when it does not: the receiver stores the reason next to the request it rejected.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from webhooks_app import signing


def check_standard(secret: str, headers: Mapping[str, str], body: bytes) -> str | None:
    """Standard Webhooks: ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``.

    Uses the library's stdlib-only ``signing`` module, which a receiver may copy verbatim;
    the timestamp tolerance is what keeps a captured request from being replayed later.
    """
    try:
        signing.verify_standard(secret, headers, body)
    except signing.InvalidSignature as exc:
        return str(exc)
    return None


def check_scalar(secret: str, signature: str | None, body: bytes) -> str | None:
    """The Scalar docs' Express handler: ``"sha256=" + hex HMAC`` of the raw body must match.

    Written out with ``hmac`` instead of calling the library, so the demo shows that a receiver
    which never heard of django-webhooks accepts what it sends.
    """
    if not signature:
        return "missing X-Scalar-Signature header"
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    # Same equality as the docs' `!==`, but in constant time so the comparison leaks nothing.
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        return "X-Scalar-Signature did not match"
    return None
