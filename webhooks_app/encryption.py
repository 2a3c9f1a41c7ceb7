"""Webhook secrets at rest: encrypted, so a database dump or a read-only SQL console shows no
signing key.

Fernet from ``cryptography`` (AES-128-CBC with an HMAC-SHA256, a timestamped token), through
``MultiFernet``: the first key encrypts, every key decrypts, so a key is rotated by putting a
new one first in ``WEBHOOKS["SECRET_KEYS"]``, running ``manage.py webhooks_reencrypt``, then
removing the old one. Without ``SECRET_KEYS`` the key is derived (HKDF) from Django's
``SECRET_KEY``, and keys derived from ``SECRET_KEY_FALLBACKS`` decrypt too; check W004 says so
outside DEBUG, because rotating ``SECRET_KEY`` then makes every secret unreadable unless the
old one stays in the fallbacks until the secrets are re-encrypted.

A stored secret is ``fernet:`` and a token. A value without that prefix is a clear-text
secret written before migration 0005 (which encrypts them all) and is read as it is.
"""

from __future__ import annotations

import base64
import functools
import logging
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from webhooks_app.conf import app_settings

PREFIX = "fernet:"
logger = logging.getLogger("webhooks_app.encryption")
_HKDF_SALT = b"django-webhooks: webhook secrets at rest"


class SecretUnreadable(ValueError):
    """A stored secret that none of the configured keys decrypts."""


def parse_keys(value: object) -> list[bytes]:
    """``WEBHOOKS["SECRET_KEYS"]`` as Fernet keys; ValueError naming the entry if malformed."""
    if not isinstance(value, (list, tuple)):
        raise ValueError("must be a list of Fernet keys (Fernet.generate_key())")
    keys = []
    for index, entry in enumerate(value):
        raw = entry.encode() if isinstance(entry, str) else entry
        try:
            Fernet(raw)
        except (TypeError, ValueError):
            raise ValueError(
                f"entry {index} is not a Fernet key (32 url-safe base64-encoded bytes, "
                "as Fernet.generate_key() makes)"
            ) from None
        keys.append(raw)
    return keys


def derived_key(secret_key: str) -> bytes:
    material = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=b"fernet key"
    ).derive(secret_key.encode())
    return base64.urlsafe_b64encode(material)


def configured() -> bool:
    return bool(app_settings.SECRET_KEYS)


def fernet() -> MultiFernet:
    """The keys as settings say now (read each time: tests and deployments change them),
    built once per distinct setting (HKDF and key parsing are not per-row work)."""
    secret_keys = app_settings.SECRET_KEYS
    if isinstance(secret_keys, list):
        secret_keys = tuple(secret_keys)
    fallbacks = tuple(str(key) for key in getattr(settings, "SECRET_KEY_FALLBACKS", []) or [])
    try:
        return _fernet(secret_keys, str(settings.SECRET_KEY or ""), fallbacks)
    except TypeError:  # unhashable: not a list of keys, which check E031 reports
        raise SecretUnreadable("WEBHOOKS['SECRET_KEYS'] is not a list of Fernet keys") from None


@functools.lru_cache(maxsize=8)
def _fernet(secret_keys: Any, secret_key: str, fallbacks: tuple[str, ...]) -> MultiFernet:
    try:
        keys = parse_keys(secret_keys)
    except ValueError:  # check E031 reports it; nothing can be encrypted meanwhile
        raise SecretUnreadable("WEBHOOKS['SECRET_KEYS'] is not a list of Fernet keys") from None
    if not keys:
        keys = [derived_key(key) for key in (secret_key, *fallbacks) if key]
    return MultiFernet([Fernet(key) for key in keys])


def is_encrypted(stored: str) -> bool:
    return stored.startswith(PREFIX)


def encrypt(secret: str) -> str:
    if isinstance(secret, UnreadableSecret):
        return str.__str__(secret)  # as it was stored
    if not secret:
        return ""
    return PREFIX + fernet().encrypt(secret.encode()).decode()


class UnreadableSecret(str):
    """What a stored secret that no configured key decrypts reads as: the stored token, kept
    so that saving the row writes it back unchanged, and refused by anything that would sign
    with it (``Webhook.signing_secrets``). One such row must not stop the fan-out, the
    admin or the host's saves; its deliveries fail visibly instead."""

    __slots__ = ()


def read(stored: str) -> str:
    """``decrypt``, except that an unreadable secret comes back as an ``UnreadableSecret``."""
    try:
        return decrypt(stored)
    except SecretUnreadable:
        logger.error("a webhook secret cannot be decrypted with the configured keys")
        return UnreadableSecret(stored)


def decrypt(stored: str) -> str:
    if not is_encrypted(stored):
        return stored
    try:
        return fernet().decrypt(stored.removeprefix(PREFIX).encode()).decode()
    except InvalidToken:
        raise SecretUnreadable(
            "a webhook secret was encrypted with a key that is not in WEBHOOKS['SECRET_KEYS'] "
            "(or, without it, not SECRET_KEY or SECRET_KEY_FALLBACKS)"
        ) from None


def reencrypt(stored: str) -> str:
    """The stored value, encrypted with the first key (clear text is encrypted)."""
    if not stored:
        return ""
    if not is_encrypted(stored):
        return encrypt(stored)
    try:
        return PREFIX + fernet().rotate(stored.removeprefix(PREFIX).encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("no configured key decrypts this secret") from None
