"""Receivers that misbehave on purpose, on 127.0.0.1: raw sockets, so nothing helps them out.

Each connection reads the request head, then does one of:

* ``hang``: never answers; holds the connection until the client gives up;
* ``trickle_headers``: sends the status line and headers one byte a second;
* ``trickle_body``: sends headers at once, then a long body one byte a second;
* ``huge_body``: promises and streams 1 GB (as fast as the client reads);
* ``huge_header``: sends a 64 MB header line;
* ``reset``: closes the connection with a TCP reset;
* ``redirect_loop``: answers 302 to itself, for ever.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

MODES = (
    "hang",
    "trickle_headers",
    "trickle_body",
    "huge_body",
    "huge_header",
    "reset",
    "redirect_loop",
)


class HostileReceiver:
    def __init__(self, mode: str) -> None:
        assert mode in MODES, mode
        self.mode = mode
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.closed = threading.Event()
        self.connections = 0
        self.bytes_sent = 0
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _read_head(self, connection: socket.socket) -> None:
        data = b""
        connection.settimeout(10)
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in data and len(data) < 1_000_000:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                data += chunk

    def _send(self, connection: socket.socket, data: bytes) -> bool:
        try:
            connection.sendall(data)
        except OSError:
            return False
        self.bytes_sent += len(data)
        return True

    def _trickle(self, connection: socket.socket, data: bytes) -> None:
        for byte in data:
            if self.closed.is_set() or not self._send(connection, bytes([byte])):
                return
            time.sleep(1.0)

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            self._read_head(connection)
            mode = self.mode
            if mode == "hang":
                self.closed.wait(120)
            elif mode == "trickle_headers":
                self._trickle(connection, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            elif mode == "trickle_body":
                head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
                if self._send(connection, head):
                    self._trickle(connection, b"x" * 1000)
            elif mode == "huge_body":
                size = 1024**3
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode()
                chunk = b"x" * 65536
                if self._send(connection, head):
                    for _ in range(size // len(chunk)):
                        if self.closed.is_set() or not self._send(connection, chunk):
                            break
            elif mode == "huge_header":
                head = b"HTTP/1.1 200 OK\r\nX-Huge: "
                chunk = b"a" * 65536
                if self._send(connection, head):
                    for _ in range(64 * 1024**2 // len(chunk)):
                        if self.closed.is_set() or not self._send(connection, chunk):
                            break
            elif mode == "reset":
                # SO_LINGER with a zero timeout: close() sends a RST instead of a FIN.
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif mode == "redirect_loop":
                head = f"HTTP/1.1 302 Found\r\nLocation: {self.url}\r\nContent-Length: 0\r\n\r\n"
                self._send(connection, head.encode())

    def close(self) -> None:
        self.closed.set()
        with contextlib.suppress(OSError):
            self.listener.close()
