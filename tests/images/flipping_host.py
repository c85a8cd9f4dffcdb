"""An image route for the loopback image host that flips between behaviours as a test says:
serving (with an ETag, answering 304 to it), 404, slow, and 429 with Retry-After. It counts
the requests it has in flight per Host header, and the most it ever had."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Literal

Mode = Literal["serve", "missing", "slow", "busy", "busy-no-retry-after"]


class FlippingImage:
    """One image whose host's behaviour the test flips; install with `host.routes[path]`."""

    def __init__(self, body: bytes, content_type: str = "image/png") -> None:
        self.mode: Mode = "serve"
        self.body = body
        self.content_type = content_type
        self.version = 1
        self.retry_after = "120"
        self.slow_seconds = 2.0  # beyond the tests' IMAGE_FETCH_TIMEOUT of 1 s
        self.serve_delay = 0.0  # added to every answer, to hold requests in flight
        self.gate: threading.Event | None = None  # when set: answers wait for it
        self.conditional_requests = 0
        self.not_modified = 0
        self._lock = threading.Lock()
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.max_total_in_flight = 0

    @property
    def etag(self) -> str:
        return f'"v{self.version}"'

    def replace(self, body: bytes) -> None:
        """New bytes at the same URL, with a new ETag."""
        self.body = body
        self.version += 1

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        host = handler.headers.get("Host", "")
        with self._lock:
            self.in_flight[host] += 1
            self.max_in_flight[host] = max(self.max_in_flight[host], self.in_flight[host])
            self.max_total_in_flight = max(self.max_total_in_flight, sum(self.in_flight.values()))
        left = False

        def leave() -> None:
            # Called just before the answer's first byte goes out: a client that has read the
            # answer may start its next request at once, and must not find this one counted.
            nonlocal left
            if not left:
                left = True
                with self._lock:
                    self.in_flight[host] -= 1

        handler.leave_in_flight = leave  # type: ignore[attr-defined]
        try:
            if self.gate is not None:
                self.gate.wait(10)
            if self.serve_delay:
                time.sleep(self.serve_delay)
            self._answer(handler)
        finally:
            leave()

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        if self.mode == "missing":
            self._send(handler, 404, b"gone", {"Content-Type": "text/plain"})
        elif self.mode == "busy":
            self._send(handler, 429, b"slow down", {"Retry-After": self.retry_after})
        elif self.mode == "busy-no-retry-after":
            self._send(handler, 503, b"unavailable", {})
        else:
            if self.mode == "slow":
                time.sleep(self.slow_seconds)
            if handler.headers.get("If-None-Match") is not None:
                with self._lock:
                    self.conditional_requests += 1
                if handler.headers["If-None-Match"] == self.etag:
                    with self._lock:
                        self.not_modified += 1
                    self._send(handler, 304, b"", {"ETag": self.etag})
                    return
            self._send(
                handler, 200, self.body, {"Content-Type": self.content_type, "ETag": self.etag}
            )

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]
    ) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        if status != 304:
            handler.send_header("Content-Length", str(len(body)))
        handler.leave_in_flight()  # type: ignore[attr-defined]
        handler.end_headers()
        if handler.command != "HEAD" and status != 304:
            # The check may have given up (its deadline) or read only its window.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                handler.wfile.write(body)
