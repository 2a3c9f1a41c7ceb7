"""Where a webhook created through the API may point: not at this network's insides.

A user who can create a webhook can make this server send requests (and, through the test
endpoint, read the answers). So a target must be an absolute http(s) URL, https unless
``WEBHOOKS["ALLOW_HTTP"]``, and every address its host resolves to must be public, unless the
host or the address is listed in ``WEBHOOKS["ALLOWED_TARGETS"]``. Private, loopback,
link-local (169.254.169.254, the cloud metadata service), shared, reserved and multicast
addresses are refused, written as literals or reached through DNS.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

from webhooks_app.conf import app_settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_validate_url = URLValidator(schemes=["http", "https"])


class TargetNotAllowed(ValueError):
    """The URL is not an acceptable webhook target; the message says which rule it broke."""


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (tests replace this: they never use real DNS)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def parse_allowed(entries: object) -> tuple[set[str], list[IPNetwork]]:
    """Split ``ALLOWED_TARGETS`` into host names and networks; raise ValueError if malformed."""
    if not isinstance(entries, (list, tuple)):
        raise ValueError("must be a list of host names, IP addresses or networks")
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip():
            raise ValueError(f"{entry!r} is not a host name, IP address or network")
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            if "/" in entry or ":" in entry or " " in entry:
                raise ValueError(f"{entry!r} is not a host name, IP address or network") from None
            hosts.add(entry.lower().rstrip("."))
    return hosts, networks


NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def is_public(address: IPAddress) -> bool:
    # An IPv6 address that carries an IPv4 one (::ffff:10.0.0.1, 6to4 2002:a9fe:a9fe::,
    # NAT64 64:ff9b::a9fe:a9fe, the old ::127.0.0.1) reaches that IPv4 address: judge it.
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and (address in NAT64 or int(address) >> 32 == 0):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            address = embedded
    return address.is_global and not address.is_multicast


def check_target_url(url: str) -> None:
    """Raise :class:`TargetNotAllowed` if the API must not accept ``url`` as a target."""
    try:
        _validate_url(url)
    except ValidationError:
        raise TargetNotAllowed("Enter an absolute http:// or https:// URL.") from None
    parts = urlsplit(url)
    if parts.scheme == "http" and not app_settings.ALLOW_HTTP:
        raise TargetNotAllowed(
            "The URL must use https (plain http is allowed only with WEBHOOKS['ALLOW_HTTP'])."
        )
    if parts.username or parts.password:
        # They would be shown in delivery logs and lists; use a custom header instead.
        raise TargetNotAllowed("The URL must not contain a user name or password.")
    host = (parts.hostname or "").rstrip(".")
    allowed_hosts, allowed_networks = parse_allowed(app_settings.ALLOWED_TARGETS)
    if host.lower() in allowed_hosts:
        return
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in resolve(host, port)]
        except (OSError, UnicodeError, ValueError):
            raise TargetNotAllowed(f"The host {host!r} could not be resolved.") from None
    for address in addresses:
        if is_public(address) or any(address in network for network in allowed_networks):
            continue
        raise TargetNotAllowed(
            f"The host {host!r} resolves to {address}, a private, loopback, link-local or "
            "reserved address (allow it with WEBHOOKS['ALLOWED_TARGETS'])."
        )
