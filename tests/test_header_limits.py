"""`gallery serve` bounds what a client can make it hold before a request starts, with no
proxy in front: headers over MAX_HEADER_BYTES get 431, and a client that has not finished its
headers within HEADER_TIMEOUT seconds is disconnected. Against a real server process on
127.0.0.1; every loop below is bounded in count and time."""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.live_server import LiveServer, live_server

pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 2.0
SLOW_CLIENTS = 6
# Each slow client sends this much of a header line, just under the 64 KiB limit, and stalls.
HELD_BYTES = 60 * 1024
MAX_RSS_GROWTH_BYTES = 50 * 1024 * 1024


def _connect(server: LiveServer) -> socket.socket:
    parts = urlsplit(server.url)
    assert parts.hostname == "127.0.0.1"
    return socket.create_connection((parts.hostname, parts.port or 80), timeout=5)


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _read_until_closed(sock: socket.socket, deadline_seconds: float) -> bytes:
    """Everything the server sends until it closes the connection (or the deadline)."""
    received = b""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.1)
        if not readable:
            continue
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"still open after {deadline_seconds}s; got {received[:80]!r}")


def _headers(total_bytes: int) -> bytes:
    lines = [b"GET /health/live HTTP/1.1", b"Host: 127.0.0.1"]
    size = sum(len(line) + 2 for line in lines) + 2
    number = 0
    while size < total_bytes:
        line = b"X-Padding-%d: %s" % (number, b"a" * min(1000, max(1, total_bytes - size)))
        lines.append(line)
        size += len(line) + 2
        number += 1
    return b"\r\n".join(lines) + b"\r\n\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        tmp_path_factory.mktemp("header-limits"), HEADER_TIMEOUT=str(HEADER_TIMEOUT)
    ) as running:
        yield running


def test_headers_over_64_kib_are_refused_with_431(server: LiveServer) -> None:
    with _connect(server) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(_headers(100 * 1024))
        answer = _read_until_closed(sock, 10)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"code":"headers_too_large"' in answer.replace(b" ", b"")
    # Headers just under the limit are served as usual.
    with _connect(server) as sock:
        sock.sendall(_headers(60 * 1024))
        first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200 "), first[:200]


def test_slow_header_clients_are_disconnected_and_hold_little_memory(
    server: LiveServer,
) -> None:
    pid = server.process.pid
    assert httpx.get(f"{server.url}/health/live", timeout=5).status_code == 200
    idle = _rss_bytes(pid)
    clients = [_connect(server) for _ in range(SLOW_CLIENTS)]
    try:
        started = time.monotonic()
        for sock in clients:
            sock.sendall(b"GET /users HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * HELD_BYTES)
        peak = idle
        while time.monotonic() - started < HEADER_TIMEOUT * 0.75:
            peak = max(peak, _rss_bytes(pid))
            time.sleep(0.05)
        assert peak - idle < MAX_RSS_GROWTH_BYTES, (idle, peak)
        for sock in clients:
            # Closed without an answer once HEADER_TIMEOUT has passed since the headers began.
            assert _read_until_closed(sock, HEADER_TIMEOUT + 5) == b""
        elapsed = time.monotonic() - started
        assert HEADER_TIMEOUT * 0.9 <= elapsed < HEADER_TIMEOUT + 5, elapsed
    finally:
        for sock in clients:
            sock.close()
    # The server itself is fine.
    assert httpx.get(f"{server.url}/health/live", timeout=5).status_code == 200


def test_a_client_trickling_bytes_is_disconnected_too(server: LiveServer) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /users HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        closed_after = None
        # Bounded: at most 40 bytes, 0.2 s apart (8 s), far beyond HEADER_TIMEOUT.
        for number in range(40):
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                with contextlib.suppress(ConnectionResetError):
                    if sock.recv(1024):
                        raise AssertionError("the server answered an incomplete request")
                closed_after = time.monotonic() - started
                break
            try:
                sock.sendall(b"X-%d: a\r\n" % number)
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - started
                break
    assert closed_after is not None, "a trickling client kept its connection"
    assert closed_after < HEADER_TIMEOUT + 2, closed_after


def test_a_kept_alive_connection_has_the_same_deadline_for_its_next_request(
    server: LiveServer,
) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        for _ in range(20):
            if answer.endswith(b'{"status":"ok"}'):
                break
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        # The next request begins (which stops uvicorn's keep-alive timer) and stalls.
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
        started = time.monotonic()
        assert _read_until_closed(sock, HEADER_TIMEOUT + 5) == b""
        assert time.monotonic() - started >= HEADER_TIMEOUT * 0.9
