"""The one place that does HTTP: every request the package makes goes through this module.

Requests run on one asyncio event loop per process, on a daemon thread, over one aiohttp
session whose connector keeps a pool of kept-alive connections per endpoint. Callers stay
synchronous: ``submit_all()`` starts requests and reports each outcome to a callback (the
delivery engine keeps hundreds in flight from its own thread, handing each claim's requests
to the loop at once), ``send()`` waits for one (test sends, commands).
aiohttp was chosen by measurement (bench/http_clients.py, docs/benchmarks.md): under
concurrency it costs a third of urllib3's CPU per request and a seventh of requests'.

Each attempt has one deadline: connecting, sending, waiting for the headers and reading the
body together end within the request's timeout, however slowly the receiver sends bytes.
Nothing here raises: every failure comes back as an ``AttemptResult`` with a plain-words
message. Redirects are never followed, the response body is read up to
``RESPONSE_BODY_LIMIT`` bytes, and headers are bounded by aiohttp's parser (8 KiB a line).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import datetime
import functools
import ipaddress
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import aiohttp.abc
import certifi
from django.utils import timezone

from webhooks_app import targets
from webhooks_app.conf import app_settings

ERROR_MESSAGE_LIMIT = 2000
SUMMARY_LIMIT = 300
SUMMARY_BODY_CHARS = 80
# Connections idle this long are closed; receivers commonly drop them after 60-75 s.
KEEPALIVE_SECONDS = 30.0
_READ_CHUNK = 65536
# How long past its deadline a caller waits for an attempt before giving up on it: the
# deadline is enforced on the event loop, this only covers a loop that stopped running.
GUARD_SECONDS = 2.0


@dataclass(frozen=True)
class OutgoingRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    timeout: float
    # Every request the package makes is checked against targets.py when it connects; only
    # the local forwarding of ``webhooks_listen --forward-to`` (a developer's own machine,
    # by design) goes without.
    guarded: bool = True


class Blocked(Exception):
    """The target is not one the package may connect to; the message says why and how to
    allow it."""


class _GuardedResolver(aiohttp.abc.AbstractResolver):
    """Resolves as usual, then keeps only the addresses ``targets`` allows. aiohttp connects
    to what this returns, so the address checked is the address used (no second lookup)."""

    def __init__(self) -> None:
        self._resolver = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        resolved = await self._resolver.resolve(host, port, family)
        allowed = [entry for entry in resolved if not targets.refusal(host, entry["host"])]
        if not allowed:
            raise Blocked(targets.refusal(host, resolved[0]["host"]) or f"Blocked: {host}")
        return allowed

    async def close(self) -> None:
        await self._resolver.close()


@dataclass
class AttemptResult:
    started_at: datetime.datetime
    duration_ms: int
    status_code: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: str = ""
    # A short, stable name for the kind of failure ("Timeout", "ConnectionError", ...) and
    # what happened in plain words; both empty when a response came back.
    error_class: str = ""
    error_message: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def summary(self) -> str:
        """The cause in a few plain words, for lists and commands: ``Connection refused
        (127.0.0.1:9)``, ``Timed out after 5 s waiting for the response``, ``HTTP 401
        (Invalid signature)``: the status with the start of what the receiver said."""
        if self.error_class:
            return self.error_message.split("\n", 1)[0][:SUMMARY_LIMIT] or self.error_class
        said = " ".join(_what_it_said(self.response_body).split())[:SUMMARY_BODY_CHARS]
        if said and not self.succeeded:
            return f"HTTP {self.status_code} ({said})"[:SUMMARY_LIMIT]
        return f"HTTP {self.status_code}"


def _what_it_said(body: str) -> str:
    """A JSON error body's message (``{"error": "Invalid signature"}``), else the body."""
    if body.lstrip().startswith("{"):
        try:
            parsed = json.loads(body)
        except ValueError:
            return body
        if isinstance(parsed, dict):
            for key in ("error", "message", "detail"):
                if isinstance(parsed.get(key), str) and parsed[key].strip():
                    return str(parsed[key])
    return body


class _Phase(SimpleNamespace):
    """Where an attempt is, for the timeout message."""

    name: str = "connecting"


# The attempt's phase, in the context of its own task (``_attempt`` sets it; a task's context
# is its own copy, so concurrent attempts never see each other's).
_current_phase: contextvars.ContextVar[_Phase] = contextvars.ContextVar("webhooks_http_phase")


class _Connector(aiohttp.TCPConnector):
    """Marks the attempt connected once it has a connection, new or kept alive.

    aiohttp's trace hooks said the same, but any trace config makes every request create its
    trace objects and await each of its signals: ~25 µs a request of the sending thread's
    CPU (a loop of bare aiohttp requests with and without one; docs/benchmarks.md item 23)."""

    async def connect(self, req: Any, *args: Any, **kwargs: Any) -> Any:
        connection = await super().connect(req, *args, **kwargs)
        phase = _current_phase.get(None)
        if phase is not None:
            phase.name = "waiting for the response"
        return connection


class Transport:
    """An event loop on a daemon thread and one aiohttp session, for one process."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="webhooks-http", daemon=True)
        self.thread.start()
        self.session: aiohttp.ClientSession = asyncio.run_coroutine_threadsafe(
            self._open(), self.loop
        ).result(timeout=30)
        self._unguarded: aiohttp.ClientSession | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _open(self, guarded: bool = True) -> aiohttp.ClientSession:
        connector = _Connector(
            # The delivery engine caps requests in flight (per process and per endpoint);
            # a second cap here would only make requests queue where no deadline sees them.
            limit=0,
            limit_per_host=0,
            keepalive_timeout=KEEPALIVE_SECONDS,
            ssl=ssl.create_default_context(cafile=certifi.where()),
            resolver=_GuardedResolver() if guarded else None,
        )
        return aiohttp.ClientSession(
            connector=connector,
            # Our own deadline covers the whole attempt; aiohttp's 5-minute default must not.
            timeout=aiohttp.ClientTimeout(total=None),
            # We read at most RESPONSE_BODY_LIMIT bytes as they are: a compressed 1 MB body
            # must not turn into a gigabyte in memory, and receivers need not compress.
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding",),
            trust_env=False,
        )

    def submit_all(
        self, requests: Sequence[tuple[OutgoingRequest, float | None]], on_done: OnDone
    ) -> list[Started]:
        """Start each request (at ``time.monotonic() >= not_before`` when one is given),
        all in one hand-over to the loop's thread; ``on_done(index, outcome)`` is called on
        that thread as each ends, unless it was cancelled.

        ``asyncio.run_coroutine_threadsafe`` per request woke the loop's thread (a write to
        its self-pipe) and switched threads once per request, and the
        ``concurrent.futures.Future`` each one returns (a ``Condition``, its lock and
        callbacks) was ~6 % of a worker's time holding the GIL (py-spy --gil,
        bench/worker_path.py). The handles returned only cancel."""
        handles = [Started(self.loop) for _ in requests]

        def start() -> None:
            for index, ((request, not_before), handle) in enumerate(
                zip(requests, handles, strict=True)
            ):
                if handle.cancelled:
                    continue
                task = self.loop.create_task(self._attempt(request, not_before))
                task.add_done_callback(functools.partial(_report, on_done, index))
                handle.attach(task)

        self.loop.call_soon_threadsafe(start)
        return handles

    async def _attempt(self, request: OutgoingRequest, not_before: float | None) -> AttemptResult:
        if not_before is not None:
            delay = not_before - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        started_at = timezone.now()
        start = time.monotonic()
        phase = _Phase()
        _current_phase.set(phase)
        limit = int(app_settings.RESPONSE_BODY_LIMIT)
        try:
            session = self.session if request.guarded else await self._unguarded_session()
            if request.guarded:
                _check_literal_target(request.url)
            async with asyncio.timeout(request.timeout):
                async with session.request(
                    request.method,
                    request.url,
                    data=request.body,
                    headers=request.headers,
                    allow_redirects=False,
                ) as response:
                    phase.name = "reading the response body"
                    body = bytearray()
                    while len(body) < limit:
                        chunk = await response.content.read(min(_READ_CHUNK, limit - len(body)))
                        if not chunk:
                            break
                        body += chunk
                    if not response.content.at_eof():
                        # The rest is not read, so this connection cannot carry another request.
                        response.close()
                    return AttemptResult(
                        started_at=started_at,
                        duration_ms=_elapsed_ms(start),
                        status_code=response.status,
                        response_headers=dict(response.headers),
                        response_body=_as_text(bytes(body), response.charset),
                    )
        except Exception as exc:  # every failure is recorded, none escapes (house rule 6)
            error_class, message = describe_error(exc, request, phase.name)
            detail = exception_text(exc)
            if detail and error_class not in ("Blocked", "Timeout") and message not in detail:
                # The plain words first (the summary is that line), then what was raised.
                message = f"{message}\n\n{detail}"
            return AttemptResult(
                started_at=started_at,
                duration_ms=_elapsed_ms(start),
                error_class=error_class,
                error_message=message[:ERROR_MESSAGE_LIMIT],
            )

    async def _unguarded_session(self) -> aiohttp.ClientSession:
        if self._unguarded is None:
            self._unguarded = await self._open(guarded=False)
        return self._unguarded

    def close(self) -> None:
        if self.pid != os.getpid() or not self.thread.is_alive():
            return
        # Closing at exit: if it fails there is nobody left to tell.
        for session in (self.session, self._unguarded):
            if session is not None:
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(session.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)


# Called on the loop's thread with the request's index and its outcome: the result, or the
# exception that escaped the attempt (none should: _attempt records every failure).
OnDone = Callable[[int, "AttemptResult | BaseException"], None]


class Started:
    """A request handed to the loop (``submit_all``); ``cancel()`` stops it, from any thread,
    and its ``on_done`` is then not called."""

    __slots__ = ("cancelled", "loop", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.task: asyncio.Task[AttemptResult] | None = None
        self.cancelled = False

    def attach(self, task: asyncio.Task[AttemptResult]) -> None:
        """On the loop's thread, once the request's task exists."""
        self.task = task
        if self.cancelled:  # cancelled while it was being started
            task.cancel()

    def cancel(self) -> None:
        self.cancelled = True
        task = self.task
        if task is not None:
            with contextlib.suppress(RuntimeError):  # the loop has been closed
                self.loop.call_soon_threadsafe(task.cancel)


def _report(on_done: OnDone, index: int, task: asyncio.Task[AttemptResult]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    on_done(index, error if error is not None else task.result())


def _check_literal_target(url: str) -> None:
    """What the resolver never sees: a URL whose host is an IP address, and the scheme."""
    allowed = app_settings.ALLOWED_TARGETS
    key = tuple(allowed) if isinstance(allowed, list | tuple) else allowed
    try:
        refused = _cached_literal_refusal(url, bool(app_settings.ALLOW_HTTP), key)
    except TypeError:  # an unhashable (malformed) ALLOWED_TARGETS, which check E025 reports
        refused = _literal_refusal(url)
    if refused:
        raise Blocked(refused)


@functools.lru_cache(maxsize=1024)
def _cached_literal_refusal(url: str, allow_http: bool, allowed_targets: object) -> str | None:
    """``_literal_refusal``, by the URL and the two settings its answer depends on: parsing
    the URL and its address was ~12 % of the sending thread's time a request (cProfile)."""
    return _literal_refusal(url)


def _literal_refusal(url: str) -> str | None:
    refused = targets.scheme_refusal(url)
    if refused:
        return refused
    try:
        host = (urlsplit(url).hostname or "").rstrip(".")
    except ValueError:
        return None  # aiohttp refuses it as an invalid URL, before any connection
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        # 2130706433 and 0177.0.0.1 reach 127.0.0.1 through the system's resolver; say so
        # (aiohttp would only call them invalid).
        numeric = targets.numeric_host(host)
        if numeric is None:
            return None
        address = numeric
    return targets.refusal(host, address)


def _as_text(body: bytes, charset: str | None) -> str:
    """A response body as text we can store: undecodable bytes and NUL (which PostgreSQL
    text cannot hold: one would fail the write of every outcome in its batch) become
    U+FFFD."""
    return body.decode(charset or "utf-8", errors="replace").replace("\x00", "\ufffd")


def _elapsed_ms(start: float) -> int:
    return int((time.monotonic() - start) * 1000)


def exception_text(exc: BaseException) -> str:
    """What was raised, with its causes: ``aiohttp.client_exceptions.ClientConnectorError:
    Cannot connect to host ... <- ConnectionRefusedError: [Errno 111] ...``."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(parts) < 5:
        seen.add(id(current))
        kind = type(current)
        parts.append(f"{kind.__module__}.{kind.__qualname__}: {current}".rstrip(": "))
        current = current.__cause__ or current.__context__
    return "\n<- ".join(parts)


def describe_error(exc: BaseException, request: OutgoingRequest, phase: str) -> tuple[str, str]:
    """A stable kind and a plain-words message for a failed attempt."""
    blocked = _cause(exc, Blocked)
    if blocked is not None:
        return "Blocked", str(blocked)
    if isinstance(exc, TimeoutError):
        return "Timeout", f"Timed out after {request.timeout:g} s {phase}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "TLSError", _certificate_problem(exc.certificate_error, exc.host)
    if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError):
        return "TLSError", f"TLS handshake failed: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError) or _caused_by(exc, socket.gaierror):
        host = getattr(exc, "host", "") or ""
        return "NameResolutionError", f"DNS: no such host {host}".rstrip()
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "ConnectionError", f"{_os_reason(exc.os_error)} ({exc.host}:{exc.port})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "ConnectionError", f"The server closed the connection {phase}"
    if isinstance(exc, aiohttp.ClientOSError | ConnectionError):
        return "ConnectionError", f"{_os_reason(exc)} ({phase})"
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.InvalidUrlClientError):
        return "InvalidURL", f"Invalid URL: {exc}"
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        return "InvalidResponse", f"Invalid HTTP response: {exc}"
    return type(exc).__name__, str(exc) or type(exc).__name__


# OpenSSL's X509_V_ERR_* codes that receivers' certificates commonly fail with.
_CERTIFICATE_PROBLEMS = {
    9: "TLS certificate not valid yet",
    10: "TLS certificate expired",
    18: "TLS certificate is self-signed",
    19: "TLS certificate chain has a self-signed certificate",
    20: "TLS certificate issuer unknown (incomplete chain or private CA)",
    21: "TLS certificate issuer unknown (incomplete chain or private CA)",
    62: "TLS certificate not valid for host",
}


def _certificate_problem(error: BaseException, host: str) -> str:
    code = getattr(error, "verify_code", None)
    words = _CERTIFICATE_PROBLEMS.get(code if isinstance(code, int) else -1)
    said = getattr(error, "verify_message", "") or str(error)
    if words is None:
        return f"TLS certificate rejected: {said}"
    return f"{words} {host}: {said}" if code == 62 else f"{words} ({host}): {said}"


def _os_reason(error: OSError) -> str:
    """``Connection refused`` rather than asyncio's ``Connect call failed ('1.2.3.4', 80)``."""
    if error.errno:
        return os.strerror(error.errno)
    return error.strerror or str(error) or type(error).__name__


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    return _cause(exc, kind) is not None


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


_transport: Transport | None = None
_transport_lock = threading.Lock()


def transport() -> Transport:
    """This process's transport; a forked worker starts its own (threads do not survive fork)."""
    global _transport
    current = _transport
    if current is not None and current.pid == os.getpid():
        return current
    with _transport_lock:
        if _transport is None or _transport.pid != os.getpid():
            _transport = Transport()
        return _transport


def submit_all(
    requests: Sequence[tuple[OutgoingRequest, float | None]], on_done: OnDone
) -> list[Started]:
    """Start these requests, each not before its monotonic time when one is given; see
    ``Transport.submit_all``."""
    return transport().submit_all(requests, on_done)


def send(request: OutgoingRequest) -> AttemptResult:
    """Make one request and wait for its result; never raises."""
    started_at = timezone.now()
    outcome: list[AttemptResult | BaseException] = []
    ended = threading.Event()

    def finished(_: int, result: AttemptResult | BaseException) -> None:
        outcome.append(result)
        ended.set()

    (started,) = submit_all([(request, None)], finished)
    # The attempt ends on its own deadline; this only guards against a stalled loop.
    if ended.wait(timeout=request.timeout + GUARD_SECONDS):
        result = outcome[0]
        if isinstance(result, AttemptResult):
            return result
        error_class, message = describe_error(result, request, "sending the request")
        return AttemptResult(
            started_at=started_at,
            duration_ms=int((timezone.now() - started_at).total_seconds() * 1000),
            error_class=error_class,
            error_message=message,
        )
    started.cancel()
    return AttemptResult(
        started_at=started_at,
        duration_ms=int((timezone.now() - started_at).total_seconds() * 1000),
        error_class="Timeout",
        error_message=f"Timed out after {request.timeout:g} s (no answer from the sender loop)",
    )


@atexit.register
def _close_at_exit() -> None:
    if _transport is not None:
        _transport.close()
