"""A network guard for tests about private and public addresses: no packet leaves the machine.

``install()`` replaces ``socket.getaddrinfo`` and ``socket.socket.connect``/``connect_ex``
in this process. Name lookups are answered from a table (numeric hosts are parsed locally,
``AI_NUMERICHOST``, so no resolver is asked); a name not in the table does not exist. A
connection is let through only to a loopback port the test declared (the suite's own
receiver, its Redis); every other one is recorded in ``attempts`` (and in the log file, for
a subprocess) and refused with ECONNREFUSED before a packet is sent. asyncio and aiohttp
connect through ``socket.socket.connect``, so the package's requests meet the guard too.

A subprocess loads it through ``tests/netguard_site/sitecustomize.py`` (on its PYTHONPATH,
configured by the ``WEBHOOKS_TEST_NETGUARD`` variable) and writes ``loaded <pid>`` to the log
first: a test reads that line and fails without it.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

ENVIRONMENT_VARIABLE = "WEBHOOKS_TEST_NETGUARD"
REFUSAL = "refused by the test suite's network guard"

_real_getaddrinfo = socket.getaddrinfo
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_active: Guard | None = None


class Guard:
    def __init__(
        self,
        *,
        allowed_ports: Iterable[int] = (),
        names: Mapping[str, Sequence[str | Sequence[str]]] | None = None,
        log_path: str | None = None,
    ) -> None:
        self.allowed_ports = set(allowed_ports)
        # name -> one answer per lookup, the last one repeating: ["93.184.216.34", "127.0.0.1"]
        # is a name that rebinds to loopback after its first lookup.
        self.names: dict[str, list[list[str]]] = {"localhost": [["127.0.0.1", "::1"]]}
        for name, answers in (names or {}).items():
            self.answer(name, *answers)
        self.lookups: dict[str, int] = {}
        self.attempts: list[tuple[str, int]] = []
        self.log_path = log_path
        self._lock = threading.Lock()

    def answer(self, name: str, *answers: str | Sequence[str]) -> None:
        self.names[name.lower()] = [[a] if isinstance(a, str) else list(a) for a in answers]

    def allow_port(self, port: int) -> None:
        self.allowed_ports.add(port)

    def _log(self, line: str) -> None:
        if self.log_path:
            with open(self.log_path, "a") as log:
                log.write(line + "\n")

    def getaddrinfo(
        self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[Any]:
        if host is None:
            return _real_getaddrinfo(host, port, family, type, proto, flags)
        name = host.decode() if isinstance(host, bytes) else str(host)
        try:
            return _real_getaddrinfo(name, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            pass
        key = name.lower().rstrip(".")
        with self._lock:
            answers = self.names.get(key)
            if answers is None:
                raise socket.gaierror(socket.EAI_NONAME, f"Name or service not known ({key})")
            count = self.lookups.get(key, 0)
            self.lookups[key] = count + 1
            addresses = answers[min(count, len(answers) - 1)]
        self._log(f"lookup {key} -> {' '.join(addresses)}")
        results = []
        number = int(port or 0) if not isinstance(port, str) or port.isdigit() else 0
        for address in addresses:
            version = ipaddress.ip_address(address).version
            address_family = socket.AF_INET if version == 4 else socket.AF_INET6
            if family not in (0, socket.AF_UNSPEC, address_family):
                continue
            sockaddr: tuple[Any, ...] = (
                (address, number) if version == 4 else (address, number, 0, 0)
            )
            results.append((address_family, type or socket.SOCK_STREAM, proto or 6, "", sockaddr))
        if not results:
            raise socket.gaierror(socket.EAI_NODATA, f"No address of that family ({key})")
        return results

    def permits(self, sock: socket.socket, address: Any) -> bool:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return True
        host, port = str(address[0]), int(address[1])
        try:
            loopback = ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            loopback = False
        if loopback and port in self.allowed_ports:
            return True
        with self._lock:
            self.attempts.append((host, port))
        self._log(f"connect {host} {port}")
        return False


def _guarded_connect(sock: socket.socket, address: Any) -> None:
    if _active is not None and not _active.permits(sock, address):
        raise ConnectionRefusedError(errno.ECONNREFUSED, REFUSAL)
    _real_connect(sock, address)


def _guarded_connect_ex(sock: socket.socket, address: Any) -> int:
    if _active is not None and not _active.permits(sock, address):
        return errno.ECONNREFUSED
    return _real_connect_ex(sock, address)


def _guarded_getaddrinfo(*args: Any, **kwargs: Any) -> list[Any]:
    if _active is None:
        return _real_getaddrinfo(*args, **kwargs)
    return _active.getaddrinfo(*args, **kwargs)


def install(guard: Guard) -> Guard:
    global _active
    _active = guard
    socket.getaddrinfo = _guarded_getaddrinfo  # type: ignore[assignment]
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    guard._log(f"loaded {os.getpid()}")
    return guard


def uninstall() -> None:
    global _active
    _active = None
    socket.getaddrinfo = _real_getaddrinfo
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]


def is_installed() -> bool:
    return (
        _active is not None
        and socket.getaddrinfo is _guarded_getaddrinfo
        and socket.socket.connect is _guarded_connect
    )


def environment(
    log_path: str, *, allowed_ports: Iterable[int] = (), names: Mapping[str, Any] | None = None
) -> str:
    """The value of ``WEBHOOKS_TEST_NETGUARD`` that makes a subprocess install a guard."""
    return json.dumps(
        {"log": log_path, "allowed_ports": list(allowed_ports), "names": dict(names or {})}
    )


def install_from_environment() -> None:
    """Called by sitecustomize in a subprocess the suite starts."""
    config = os.environ.get(ENVIRONMENT_VARIABLE)
    if not config:
        return
    options = json.loads(config)
    install(
        Guard(
            allowed_ports=options["allowed_ports"],
            names=options["names"],
            log_path=options["log"],
        )
    )
