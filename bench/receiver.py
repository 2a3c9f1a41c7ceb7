"""A fast webhook receiver on 127.0.0.1 for the benchmarks, run in its own process.

It answers ``200 ok`` to every POST and counts requests and distinct ``webhook-id`` headers.
It runs in a child process so that parsing requests never competes for the sender's GIL: with
both in one process the benchmark would measure the receiver as much as the sender.

Two implementations, selectable for comparison:

* ``asyncio`` (default): a minimal HTTP/1.1 server on ``asyncio.Protocol`` with keep-alive.
  Stdlib only; no per-request thread, no ``email``-module header parsing.
* ``threading``: ``http.server.ThreadingHTTPServer`` with HTTP/1.1 keep-alive.

The parent reads the counters with ``GET /stats`` (JSON) and zeroes them with ``POST /reset``,
so no shared memory or pipe protocol is needed beyond the port handshake.

Standalone: ``python bench/receiver.py --selftest`` measures a ``requests.Session`` loop
against both implementations.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

HOST = "127.0.0.1"
# Request bodies are small JSON envelopes; anything far bigger is a bug in the benchmark.
MAX_REQUEST_BYTES = 4 * 1024 * 1024


class Counters:
    """What the receiver saw, per request path and in total; only touched in this process."""

    def __init__(self) -> None:
        self.count = 0
        self.ids: set[str] = set()
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.by_path: dict[str, PathCounters] = {}

    def record(self, webhook_id: str | None, path: str = "") -> None:
        now = time.time()
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        self.count += 1
        if webhook_id:
            self.ids.add(webhook_id)
        per_path = self.by_path.get(path)
        if per_path is None:
            per_path = self.by_path[path] = PathCounters()
        per_path.record(webhook_id, now)

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def stats(self, path: str | None = None, arrivals: bool = False) -> bytes:
        if path is not None:
            return json.dumps(self.by_path.get(path, PathCounters()).summary(arrivals)).encode()
        return json.dumps(
            {
                "count": self.count,
                "distinct_ids": len(self.ids),
                "first_at": self.first_at,
                "last_at": self.last_at,
                "paths": {name: c.count for name, c in self.by_path.items()},
            }
        ).encode()


class PathCounters:
    """Requests to one path, with each arrival time (for rates and latencies)."""

    def __init__(self) -> None:
        self.count = 0
        self.ids: set[str] = set()
        self.arrivals: list[tuple[str, float]] = []

    def record(self, webhook_id: str | None, now: float) -> None:
        self.count += 1
        if webhook_id:
            self.ids.add(webhook_id)
        self.arrivals.append((webhook_id or "", now))

    def summary(self, arrivals: bool) -> dict[str, Any]:
        times = [at for _, at in self.arrivals]
        result: dict[str, Any] = {
            "count": self.count,
            "distinct_ids": len(self.ids),
            "first_at": times[0] if times else None,
            "last_at": times[-1] if times else None,
        }
        if arrivals:
            result["arrivals"] = self.arrivals
        return result


# --- asyncio implementation --------------------------------------------------------------------

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
# "/delay/200/..." answers after 200 ms, "/hang/..." never answers, "/status/503/..." answers
# with that status: one receiver process plays a slow, a hanging and a failing endpoint.
_DELAY = re.compile(r"/delay/(\d+)(?:/|$)")
_STATUS = re.compile(r"/status/(\d{3})(?:/|$)")


class _HttpProtocol(asyncio.Protocol):
    """One connection: parses HTTP/1.1 requests out of a byte buffer, one at a time.

    Only what a webhook sender produces is supported (Content-Length bodies, no chunked
    uploads); anything else closes the connection rather than guessing. A delayed answer
    holds back the next request on the same connection, as HTTP/1.1 requires.
    """

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiting = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # Small responses must leave at once; Nagle would add ~40 ms with delayed ACKs.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > MAX_REQUEST_BYTES:
            self._close()
            return
        self._process()

    def _process(self) -> None:
        while not self.waiting and self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            lines = head.split("\r\n")
            method, target = ([*lines[0].split(" "), "", ""])[:2]
            length = 0
            webhook_id: str | None = None
            close = False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                lowered = name.strip().lower()
                if lowered == "content-length":
                    length = int(value.strip() or 0)
                elif lowered == "webhook-id":
                    webhook_id = value.strip()
                elif lowered == "connection":
                    close = value.strip().lower() == "close"
                elif lowered == "transfer-encoding":
                    self._close()
                    return
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            del self.buffer[:total]
            self._respond(method, target, webhook_id, close)

    def _respond(self, method: str, target: str, webhook_id: str | None, close: bool) -> None:
        assert self.transport is not None
        path, _, query = target.partition("?")
        if method == "GET" and path == "/stats":
            params = dict(urllib.parse.parse_qsl(query))
            body = self.counters.stats(params.get("path"), params.get("arrivals") == "1")
            self._write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body,
                close,
            )
            return
        if method == "POST" and path == "/reset":
            self.counters.reset()
            self._write(_OK, close)
            return
        self.counters.record(webhook_id, path)
        if "/hang" in path:
            self.waiting = True  # never answered: the sender's deadline has to end it
            return
        response = _OK
        status = _STATUS.search(path)
        if status:
            response = f"HTTP/1.1 {status.group(1)} X\r\nContent-Length: 0\r\n\r\n".encode()
        delay = _DELAY.search(path)
        if delay:
            self.waiting = True
            asyncio.get_running_loop().call_later(
                int(delay.group(1)) / 1000, self._write_later, response, close
            )
            return
        self._write(response, close)

    def _write_later(self, response: bytes, close: bool) -> None:
        self.waiting = False
        if self.transport is not None:
            self._write(response, close)
            self._process()

    def _write(self, response: bytes, close: bool) -> None:
        assert self.transport is not None
        self.transport.write(response)
        if close:
            self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _serve_asyncio(sock: socket.socket, ready: Any) -> None:
    counters = Counters()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _HttpProtocol(counters), sock=sock, backlog=4096)
    ready()
    async with server:
        await server.serve_forever()


# --- http.server implementation ----------------------------------------------------------------


def _serve_threading(sock: socket.socket, ready: Any) -> None:
    counters = Counters()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one TCP connection per sender session
        # http.server writes headers and body in separate sends; with Nagle on, each response
        # waits for the client's delayed ACK (~40 ms), which capped it at ~25 req/s here.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if self.path == "/reset":
                counters.reset()
            else:
                # The GIL makes these small updates atomic enough for counting.
                counters.record(self.headers.get("webhook-id"))
            self._send(b"ok", "text/plain")

        def do_GET(self) -> None:
            self._send(counters.stats(), "application/json")

        def _send(self, body: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # logging every request would dominate the receiver's cost

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def server_bind(self) -> None:  # the socket is already bound by the parent
            pass

    server = Server((HOST, 0), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.server_address = sock.getsockname()
    ready()
    server.serve_forever(poll_interval=0.2)


# --- process wrapper ---------------------------------------------------------------------------


def serve(impl: str) -> None:
    """Child side: bind a free port, print it on stdout for the parent, then serve forever."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Thousands of kept-alive connections: lift the soft file limit to the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(4096)

    def ready() -> None:
        print(sock.getsockname()[1], flush=True)

    if impl == "asyncio":
        asyncio.run(_serve_asyncio(sock, ready))
    else:
        _serve_threading(sock, ready)


class ReceiverProcess:
    """Starts the receiver as a child process; use as a context manager.

    A plain subprocess rather than ``multiprocessing``: spawn would re-import the caller's
    ``__main__`` (our scripts), fork would copy Django's open DB connections and threads.
    """

    def __init__(self, impl: str = "asyncio") -> None:
        if impl not in ("asyncio", "threading"):
            raise ValueError(f"unknown receiver implementation {impl!r}")
        self.impl = impl
        self.process = subprocess.Popen(
            [sys.executable, "-u", str(Path(__file__).resolve()), "--serve", "--impl", impl],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 15)
        line = self.process.stdout.readline().strip() if ready else ""
        if not line.isdigit():
            self.close()
            raise RuntimeError(f"the receiver process did not start within 15 s ({line!r})")
        self.port = int(line)
        # A separate session for control requests keeps them off the sender's connections.
        self._control = requests.Session()

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/hook"

    def stats(self, path: str | None = None, arrivals: bool = False) -> dict[str, Any]:
        params = {"path": path, "arrivals": "1" if arrivals else None}
        response = self._control.get(f"{self.base_url}/stats", params=params, timeout=30)
        response.raise_for_status()
        return dict(response.json())

    def reset(self) -> None:
        self._control.post(f"{self.base_url}/reset", timeout=5).raise_for_status()

    def wait_for(self, count: int, timeout: float, poll: float = 0.02) -> dict[str, Any]:
        """Poll until ``count`` requests arrived; raises ``TimeoutError`` with what did."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats["count"] >= count:
                return stats
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"receiver got {stats['count']} of {count} requests within {timeout:.0f} s"
                )
            time.sleep(poll)

    def wait_for_path(
        self, path: str, count: int, timeout: float, arrivals: bool = False
    ) -> dict[str, Any]:
        """``wait_for`` for one path's requests; ``arrivals`` adds [webhook-id, time] pairs."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats(path)
            if stats["count"] >= count:
                return self.stats(path, arrivals=True) if arrivals else stats
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"receiver got {stats['count']} of {count} requests to {path} "
                    f"within {timeout:.0f} s"
                )
            time.sleep(0.05)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> ReceiverProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def raw_requests_loop(url: str, bodies: list[bytes], ids: list[str]) -> float:
    """POST every body over one ``requests.Session``; returns the elapsed seconds.

    This is the ceiling a single-process sender can reach: the same library, headers of the
    same shape, one kept-alive connection, no database and no queue.
    """
    session = requests.Session()
    start = time.perf_counter()
    for body, event_id in zip(bodies, ids, strict=True):
        response = session.post(
            url,
            data=body,
            headers={"Content-Type": "application/json", "webhook-id": event_id},
            timeout=5,
        )
        response.raise_for_status()
    elapsed = time.perf_counter() - start
    session.close()
    return elapsed


def selftest(n: int) -> dict[str, float]:
    """Requests per second of a requests.Session loop against each implementation."""
    bodies = [json.dumps({"i": i, "pad": "x" * 400}).encode() for i in range(n)]
    ids = [f"evt_{os.getpid()}_{i}" for i in range(n)]
    rates: dict[str, float] = {}
    for impl in ("threading", "asyncio"):
        with ReceiverProcess(impl) as receiver:
            raw_requests_loop(receiver.url, bodies[:50], ids[:50])  # warm up, then zero
            receiver.reset()
            elapsed = raw_requests_loop(receiver.url, bodies, ids)
            stats = receiver.wait_for(n, timeout=10)
            if stats["count"] != n or stats["distinct_ids"] != n:
                raise RuntimeError(f"{impl}: expected {n} distinct requests, got {stats}")
            rates[impl] = n / elapsed
            print(f"{impl:>9}: {n} POSTs in {elapsed:.2f} s = {n / elapsed:,.0f} req/s")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=["asyncio", "threading"], default="asyncio")
    parser.add_argument("--selftest", action="store_true", help="measure both implementations")
    parser.add_argument("--n", type=int, default=3000, help="requests for --selftest")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.impl)
        return
    if args.selftest:
        selftest(args.n)
        return
    with ReceiverProcess(args.impl) as receiver:
        print(f"listening on {receiver.url} (Ctrl-C to stop)")
        with contextlib.suppress(KeyboardInterrupt):
            receiver.process.wait()


if __name__ == "__main__":
    main()
