"""Image hosts that misbehave: each a 422 with the right code within the check's deadline,
while the app keeps answering everyone else."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.state import app_state
from tests.reliability.conftest import World, count_rows
from tests.reliability.support import MisbehavingHost, read_request_head
from tests.support.helpers import assert_error

FETCH_TIMEOUT = 1.0
# The deadline plus generous slack for a shared 2-core machine; a hang would take far longer.
ANSWER_WITHIN = FETCH_TIMEOUT + 2.0
_release = threading.Event()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"image_fetch_timeout": FETCH_TIMEOUT}


def _reset_mid_response(connection: socket.socket) -> None:
    read_request_head(connection)
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: ima")
    # SO_LINGER 0: close() sends RST instead of FIN.
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def _reset_before_answer(connection: socket.socket) -> None:
    read_request_head(connection)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def _never_answer(connection: socket.socket) -> None:
    read_request_head(connection)
    _release.wait(30)


def _accept_and_say_nothing(connection: socket.socket) -> None:
    _release.wait(30)


def _malformed_status_line(connection: socket.socket) -> None:
    read_request_head(connection)
    connection.sendall(b"SPDY/9 what is this\r\n\r\n")
    connection.close()


def _binary_garbage(connection: socket.socket) -> None:
    read_request_head(connection)
    connection.sendall(bytes(range(256)) * 8)
    connection.close()


def _bad_headers(connection: socket.socket) -> None:
    read_request_head(connection)
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type image/png\r\n\x00\x01\r\n\r\n")
    connection.close()


def _tls_garbage(connection: socket.socket) -> None:
    connection.settimeout(5)
    connection.recv(4096)  # the ClientHello
    connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\nthis is not TLS")
    connection.close()


def _tls_hangup(connection: socket.socket) -> None:
    connection.settimeout(5)
    connection.recv(4096)
    connection.close()


Behaviour = Callable[[socket.socket], None]
FAULTS: list[tuple[str, Behaviour, str, str]] = [
    # (name, behaviour, scheme, expected code)
    ("reset-mid-response", _reset_mid_response, "http", "image_url_unreachable"),
    ("reset-before-answer", _reset_before_answer, "http", "image_url_unreachable"),
    ("never-answers", _never_answer, "http", "image_url_unreachable"),
    ("accepts-says-nothing", _accept_and_say_nothing, "http", "image_url_unreachable"),
    ("malformed-status-line", _malformed_status_line, "http", "image_url_unreachable"),
    ("binary-garbage", _binary_garbage, "http", "image_url_unreachable"),
    ("malformed-headers", _bad_headers, "http", "image_url_unreachable"),
    ("tls-handshake-garbage", _tls_garbage, "https", "image_url_unreachable"),
    ("tls-handshake-hangup", _tls_hangup, "https", "image_url_unreachable"),
    ("tls-never-answers", _accept_and_say_nothing, "https", "image_url_unreachable"),
]


@pytest.mark.parametrize(
    ("behaviour", "scheme", "code"), [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS]
)
async def test_misbehaving_host_gives_422_within_deadline_and_others_are_served(
    app: FastAPI,
    client: httpx.AsyncClient,
    world: World,
    behaviour: Behaviour,
    scheme: str,
    code: str,
) -> None:
    before = await count_rows(app)
    _release.clear()
    with MisbehavingHost(behaviour) as host:
        owner = world.owner
        finished: list[str] = []

        async def create() -> httpx.Response:
            started = time.monotonic()
            response = await client.post(
                f"/users/{owner.id}/images",
                json={"image_url": host.url("/image.png", scheme=scheme)},
                headers=owner.headers,
            )
            elapsed = time.monotonic() - started
            assert elapsed < ANSWER_WITHIN, f"took {elapsed:.2f}s"
            finished.append("create")
            return response

        async def others() -> list[httpx.Response]:
            await asyncio.sleep(0.05)
            responses = [
                await client.get("/users"),
                await client.get(f"/users/{owner.id}/images/{world.image_id}"),
                await client.post(
                    f"/users/{world.other.id}/images",
                    json={"image_url": world.image_host.url("/cat.png")},
                    headers=world.other.headers,
                ),
            ]
            finished.append("others")
            return responses

        response, other_responses = await asyncio.gather(create(), others())
        _release.set()
    assert_error(response, 422, code)
    assert [r.status_code for r in other_responses] == [200, 200, 201]
    if behaviour in (_never_answer, _accept_and_say_nothing):
        # The hanging check did not hold anyone else up.
        assert finished == ["others", "create"]
    users, images = await count_rows(app)
    assert (users, images) == (before[0], before[1] + 1)


@pytest.mark.parametrize(
    "location",
    [
        "ftp://127.0.0.1/cat.png",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/x",
        "javascript:alert(1)",
        "data:image/png;base64,iVBORw0KGgo=",
    ],
)
async def test_redirect_to_a_non_http_scheme_is_image_url_invalid(
    app: FastAPI, client: httpx.AsyncClient, world: World, location: str
) -> None:
    before = await count_rows(app)
    path = f"/redirect-{abs(hash(location))}.png"
    world.image_host.add(path, 302, b"", {"Location": location})
    started = time.monotonic()
    response = await client.post(
        f"/users/{world.owner.id}/images",
        json={"image_url": world.image_host.url(path)},
        headers=world.owner.headers,
    )
    assert time.monotonic() - started < ANSWER_WITHIN
    body = assert_error(response, 422, "image_url_invalid")
    assert "redirect" in body["detail"]
    assert await count_rows(app) == before


async def test_redirect_loop_is_too_many_redirects(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    before = await count_rows(app)
    world.image_host.add("/loop-a.png", 302, b"", {"Location": "/loop-b.png"})
    world.image_host.add("/loop-b.png", 302, b"", {"Location": "/loop-a.png"})
    response = await client.post(
        f"/users/{world.owner.id}/images",
        json={"image_url": world.image_host.url("/loop-a.png")},
        headers=world.owner.headers,
    )
    assert_error(response, 422, "image_url_too_many_redirects")
    assert await count_rows(app) == before


async def test_non_loopback_hosts_are_refused_without_connecting(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    """The suite's own guards: a public address never gets a packet from these tests. A
    global address passes the SSRF guard, so the loopback-only transport refuses it; a name
    is refused by the tests' resolver before any lookup leaves the machine; a reserved
    address is refused by the SSRF guard itself."""
    transport = app_state(app).image_checker._transport
    cases = (
        ("http://8.8.8.8/cat.png", "image_url_unreachable"),
        ("https://example.com/cat.png", "image_url_unreachable"),
        ("http://192.0.2.1/cat.png", "image_url_forbidden"),
    )
    for url, code in cases:
        response = await client.post(
            f"/users/{world.owner.id}/images",
            json={"image_url": url},
            headers=world.owner.headers,
        )
        assert_error(response, 422, code)
    assert [url for url in transport.refused if "cat.png" in url][-1:] == ["http://8.8.8.8/cat.png"]
