"""Where the package may send requests: not at this network's insides.

A user who can create a webhook can make this server send requests (and, through a test
send, read the answers). So a target must be an http(s) URL, https unless
``WEBHOOKS["ALLOW_HTTP"]``, and every address it reaches must be public, unless the host or
the address is listed in ``WEBHOOKS["ALLOWED_TARGETS"]``. Private, loopback, link-local
(169.254.169.254: cloud metadata services), shared (carrier-grade NAT), reserved, multicast
and unspecified addresses are refused, however they are written: IPv4-mapped, -compatible,
NAT64 and 6to4 IPv6 forms are judged by the IPv4 address they carry, and numeric host names
(``2130706433``, ``0177.0.0.1``) by the address the resolver makes of them.

One policy, used twice: ``check_target_url`` when a URL is accepted (the API, the admin, the
model, settings), and ``refusal`` when a connection is about to be made (``http.py``), on the
address that was resolved and will be connected to, so a name that resolves elsewhere later
(DNS rebinding) is caught too.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

from webhooks_app.conf import app_settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_validate_url = URLValidator(schemes=["http", "https"])
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
SHARED = ipaddress.IPv4Network("100.64.0.0/10")
ALLOW_TARGETS_HINT = 'allow it with WEBHOOKS["ALLOWED_TARGETS"]'


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


def _allowed() -> tuple[AbstractSet[str], Sequence[IPNetwork]]:
    entries = app_settings.ALLOWED_TARGETS
    if isinstance(entries, (list, tuple)) and all(isinstance(entry, str) for entry in entries):
        # Asked for every connection: parsed once per value of the setting, not each time
        # (ipaddress parsing was ~1.5 % of a worker's HTTP thread).
        return _parsed_allowed(tuple(entries))
    return _allowed_or_nothing(entries)


@functools.lru_cache(maxsize=8)
def _parsed_allowed(entries: tuple[str, ...]) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    hosts, networks = _allowed_or_nothing(entries)
    return frozenset(hosts), tuple(networks)


def _allowed_or_nothing(entries: object) -> tuple[set[str], list[IPNetwork]]:
    try:
        return parse_allowed(entries)
    except ValueError:  # reported by check E025; nothing extra is allowed meanwhile
        return set(), []


def effective_address(address: IPAddress) -> IPAddress:
    """The address a packet to ``address`` really reaches: an IPv6 address that carries an
    IPv4 one (::ffff:10.0.0.1, 6to4 2002:a9fe:a9fe::, NAT64 64:ff9b::a9fe:a9fe, the old
    ::127.0.0.1) reaches that IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        # ::/96 is IPv4-compatible, except :: and ::1, which are IPv6's own.
        compatible = int(address) >> 32 == 0 and int(address) > 1
        if embedded is None and (address in NAT64 or compatible):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return embedded
    return address


def kind_of(address: IPAddress, *, show_carried: bool = True) -> str | None:
    """What makes ``address`` internal (``"a private address"``), or None when it is public.
    ``show_carried`` names the IPv4 address an IPv6 one carries."""
    reached = effective_address(address)
    if reached.is_loopback:
        kind = "a loopback address"
    elif reached.is_link_local:
        kind = "a link-local address (cloud metadata services live there)"
    elif reached.is_unspecified:
        kind = "an unspecified address"
    elif reached.is_multicast:
        kind = "a multicast address"
    elif isinstance(reached, ipaddress.IPv4Address) and reached in SHARED:
        kind = "a shared (carrier-grade NAT) address"
    elif reached.is_private:
        kind = "a private address"
    elif not reached.is_global or reached.is_reserved:
        kind = "a reserved address"
    else:
        return None
    if reached != address and show_carried:
        kind += f" (it carries {reached})"
    return kind


def is_public(address: IPAddress) -> bool:
    return kind_of(address) is None


def refusal(host: str, address: str) -> str | None:
    """Why connecting to ``address`` (what ``host`` resolved to) is refused, or None.

    The message says what to do about it: ``Blocked: 10.0.0.1 is a private address; allow it
    with WEBHOOKS["ALLOWED_TARGETS"]``.
    """
    hosts, networks = _allowed()
    if host.lower().rstrip(".") in hosts:
        return None
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return f"Blocked: {address!r} is not an IP address"
    if any(ip in network for network in networks):
        return None
    if is_public(ip):
        return None
    name = host.strip("[]")
    if not _spelled_by(name, ip):
        # An answer from DNS is not repeated: these messages reach API clients (validation
        # errors, the attempt history), who could otherwise map internal names with them.
        return (
            f"Blocked: {host} resolves to {kind_of(ip, show_carried=False)}; {ALLOW_TARGETS_HINT}"
        )
    subject = address if name == address else f"{host} resolves to {address}, which"
    return f"Blocked: {subject} is {kind_of(ip)}; {ALLOW_TARGETS_HINT}"


def _spelled_by(name: str, ip: IPAddress) -> bool:
    """Whether the host name itself says it is ``ip`` (a literal or numeric address, a
    ``localhost`` name), so that naming the address tells nobody anything new."""
    if is_localhost_name(name):
        return True
    try:
        return ipaddress.ip_address(name.split("%")[0]) == ip
    except ValueError:
        return numeric_host(name.lower().rstrip(".")) == str(ip)


def is_localhost_name(host: str) -> bool:
    """RFC 6761: ``localhost`` and names under it are the loopback interface, whatever DNS
    says."""
    lowered = host.lower().rstrip(".")
    return lowered == "localhost" or lowered.endswith(".localhost")


def scheme_refusal(url: str) -> str | None:
    if urlsplit(url).scheme == "http" and not app_settings.ALLOW_HTTP:
        return 'Blocked: plain http is not allowed; allow it with WEBHOOKS["ALLOW_HTTP"]'
    return None


def numeric_host(host: str) -> str | None:
    """The IPv4 address a numeric host name stands for (``2130706433``, ``0177.0.0.1``,
    ``127.1``: what the system resolver makes of them), or None for a real name."""
    if not host or not all(part.isalnum() for part in host.split(".")):
        return None
    if not any(ch.isdigit() for ch in host) or host.replace(".", "").isalpha():
        return None
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except (OSError, UnicodeError):
        return None


def check_target_url(url: str, *, resolve_names: bool = True) -> None:
    """Raise :class:`TargetNotAllowed` if ``url`` may not be a webhook's target.

    With ``resolve_names=False`` (system checks: no DNS at start-up) only what the URL
    itself says is judged: literal and numeric addresses, and ``localhost`` names.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise TargetNotAllowed("Enter an absolute http:// or https:// URL.") from None
    # A numeric host (2130706433, 0177.0.0.1) is not a valid URL to Django's validator, but
    # resolvers connect to it: say what it really is rather than only "not a URL".
    numeric = numeric_host((parts.hostname or "").rstrip("."))
    refused = refusal(parts.hostname or "", numeric) if numeric else None
    if refused:
        raise TargetNotAllowed(f"The target {refused.removeprefix('Blocked: ')}.")
    try:
        _validate_url(url)
    except ValidationError:
        raise TargetNotAllowed("Enter an absolute http:// or https:// URL.") from None
    if parts.scheme == "http" and not app_settings.ALLOW_HTTP:
        raise TargetNotAllowed(
            "The URL must use https (plain http is allowed only with WEBHOOKS['ALLOW_HTTP'])."
        )
    if parts.username or parts.password:
        # They would be shown in delivery logs and lists; use a custom header instead.
        raise TargetNotAllowed("The URL must not contain a user name or password.")
    host = (parts.hostname or "").rstrip(".")
    allowed_hosts, _ = _allowed()
    if host.lower() in allowed_hosts:
        return
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        if is_localhost_name(host):
            addresses = ["127.0.0.1", "::1"]
        elif not resolve_names:
            return
        else:
            try:
                addresses = resolve(host, port or (443 if parts.scheme == "https" else 80))
            except (OSError, UnicodeError, ValueError):
                raise TargetNotAllowed(f"The host {host!r} could not be resolved.") from None
    for address in addresses:
        refused = refusal(host, address)
        if refused:
            reason = refused.removeprefix("Blocked: ")
            raise TargetNotAllowed(f"The target {reason}.")
