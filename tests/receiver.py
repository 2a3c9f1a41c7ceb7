"""A real HTTP receiver on 127.0.0.1 for the suite: records every request, answers as told."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class Receiver:
    """Answers with queued responses in order, then with ``default``."""

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self.responses: deque[Response] = deque()
        self.default = Response()
        self._condition = threading.Condition()
        # Requests being answered right now, and the most there ever were at once.
        self.active = 0
        self.max_active = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Without it each response waits for the client's delayed ACK (~40 ms).
            disable_nagle_algorithm = True

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with receiver._condition:
                    response = (
                        receiver.responses.popleft() if receiver.responses else receiver.default
                    )
                    receiver.active += 1
                    receiver.max_active = max(receiver.max_active, receiver.active)
                # Recorded before answering: once the sender has its response, a test may
                # look at what arrived.
                with receiver._condition:
                    receiver.requests.append(
                        ReceivedRequest(
                            self.command, self.path, dict(self.headers.items()), body, time.time()
                        )
                    )
                    receiver._condition.notify_all()
                try:
                    if response.delay:
                        time.sleep(response.delay)
                    self.send_response(response.status)
                    for name, value in response.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(response.body)))
                    self.end_headers()
                    self.wfile.write(response.body)
                finally:
                    with receiver._condition:
                        receiver.active -= 1

            do_POST = do_PUT = do_PATCH = do_GET = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            # The sender keeps many requests in flight; http.server's backlog of 5 would
            # refuse connections a real server accepts.
            request_queue_size = 256

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hook"

    def queue(self, *responses: Response) -> None:
        with self._condition:
            self.responses.extend(responses)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Block until ``count`` requests arrived (or fail after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while len(self.requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {count} requests within {timeout}s, got {len(self.requests)}"
                    )
                self._condition.wait(remaining)
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
