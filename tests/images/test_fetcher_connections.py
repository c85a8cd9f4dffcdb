"""The check's connections: its HEAD and GET share one when they go to the same scheme, host
name and port; no connection outlives its check or serves another host name; a body left
unread costs the connection; streaming reads stop at their cap. A real host on 127.0.0.1
counts every connection it accepts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from app.images.checker import ImageChecker
from app.images.fetcher import FetchSession, ImageTransport, create_image_transport
from app.images.url_guard import UrlPolicy, normalise_image_url
from tests.conftest import make_settings
from tests.support.image_host import ImageHost, LoopbackResolver, make_image

BIG = make_image("PNG") + bytes(300_000)  # a PNG followed by far more than the window


@pytest.fixture
async def transport() -> AsyncIterator[ImageTransport]:
    transport = create_image_transport(make_settings("sqlite+aiosqlite://"))
    try:
        yield transport
    finally:
        await transport.aclose()


@pytest.fixture
def checker(transport: ImageTransport) -> ImageChecker:
    return ImageChecker(transport, make_settings("sqlite+aiosqlite://"), LoopbackResolver())


@pytest.fixture
def host(image_host: ImageHost) -> ImageHost:
    image_host.forget()
    return image_host


def _session(transport: ImageTransport) -> FetchSession:
    return FetchSession(
        transport=transport,
        resolver=LoopbackResolver(),
        policy=UrlPolicy.build(["127.0.0.1/32"], []),
        redirects_left=3,
        deadline=asyncio.get_running_loop().time() + 5,
    )


def _closing_after_each_answer(handler: BaseHTTPRequestHandler) -> None:
    """Answers, then closes the connection without saying so beforehand."""
    png = make_image("PNG")
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Content-Length", str(len(png)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(png)
    handler.close_connection = True


async def test_head_and_get_of_a_check_share_one_connection(
    checker: ImageChecker, host: ImageHost
) -> None:
    await checker.check(host.url("/cat.png"))
    assert host.requests == [("HEAD", "/cat.png"), ("GET", "/cat.png")]
    assert host.connections == 1


async def test_no_connection_is_shared_between_two_checks(
    checker: ImageChecker, host: ImageHost
) -> None:
    await checker.check(host.url("/cat.png"))
    await checker.check(host.url("/cat.png"))
    assert host.connections == 2


async def test_redirect_on_the_same_host_keeps_the_connection(
    checker: ImageChecker, host: ImageHost
) -> None:
    await checker.check(host.url("/moved.png"))
    assert host.requests == [("HEAD", "/moved.png"), ("HEAD", "/cat.png"), ("GET", "/cat.png")]
    assert host.connections == 1


async def test_redirect_to_another_host_name_on_the_same_address_opens_a_new_connection(
    checker: ImageChecker, host: ImageHost
) -> None:
    # localhost and 127.0.0.1 are the same address and port, but not the same host name.
    host.add("/to-ip.png", 302, b"", {"Location": f"http://127.0.0.1:{host.port}/cat.png"})
    await checker.check(f"http://localhost:{host.port}/to-ip.png")
    assert host.requests == [("HEAD", "/to-ip.png"), ("HEAD", "/cat.png"), ("GET", "/cat.png")]
    assert host.host_headers == [f"localhost:{host.port}"] + [f"127.0.0.1:{host.port}"] * 2
    assert host.connections == 2


async def test_host_closing_its_kept_connection_gets_a_fresh_one(
    checker: ImageChecker, host: ImageHost
) -> None:
    host.routes["/closing.png"] = _closing_after_each_answer
    checked = await checker.check(host.url("/closing.png"))
    assert checked.content_type == "image/png"
    assert host.requests == [("HEAD", "/closing.png"), ("GET", "/closing.png")]
    assert host.connections == 2


async def test_unread_body_costs_the_connection(transport: ImageTransport, host: ImageHost) -> None:
    host.add("/big.png", 200, BIG, {"Content-Type": "image/png"})
    async with _session(transport) as session:
        first = await session.request(
            "GET", normalise_image_url(host.url("/big.png")), read_limit=10
        )
        assert (first.body, first.complete) == (BIG[:10], False)
        second = await session.request("HEAD", normalise_image_url(host.url("/cat.png")))
        assert second.status_code == 200
    assert host.connections == 2  # the first body was not read to its end


async def test_stream_reads_up_to_its_cap_and_a_whole_body_keeps_the_connection(
    transport: ImageTransport, host: ImageHost
) -> None:
    host.add("/big.png", 200, BIG, {"Content-Type": "image/png"})
    url = normalise_image_url(host.url("/big.png"))
    async with _session(transport) as session:
        async with session.stream("GET", url) as (final_url, response):
            assert final_url == url
            assert response.status_code == 200
            assert response.headers["content-length"] == str(len(BIG))
            received = b"".join([chunk async for chunk in response.iter_body(len(BIG) + 1)])
            assert response.finished
        assert received == BIG
        async with session.stream("GET", url) as (_, response):
            capped = b"".join([chunk async for chunk in response.iter_body(1000)])
            assert not response.finished
        assert capped == BIG[:1000]
    assert host.requests == [("GET", "/big.png"), ("GET", "/big.png")]
    assert host.connections == 1


async def test_session_ends_its_connection(transport: ImageTransport, host: ImageHost) -> None:
    async with _session(transport) as session:
        await session.request("HEAD", normalise_image_url(host.url("/cat.png")))
        connection = session._connection
        assert connection is not None
    assert session._connection is None
    assert connection.writer.transport.is_closing()


async def test_headers_repeated_by_the_host_are_joined(
    transport: ImageTransport, host: ImageHost
) -> None:
    def twice(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("X-Tag", "a")
        handler.send_header("X-Tag", "b")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    host.routes["/twice"] = twice
    async with _session(transport) as session:
        answer = await session.request("GET", normalise_image_url(host.url("/twice")))
    assert answer.headers["x-tag"] == "a, b"
    assert isinstance(answer.url, httpx.URL)


async def test_a_body_streamed_in_pieces_arrives_whole_and_in_order(
    transport: ImageTransport, host: ImageHost
) -> None:
    host.add("/big.png", 200, BIG, {"Content-Type": "image/png"})
    url = normalise_image_url(host.url("/big.png"))
    pieces: list[bytes] = []
    async with _session(transport) as session, session.stream("GET", url) as (_, response):
        while not response.finished:
            piece = b"".join([chunk async for chunk in response.iter_body(777)])
            assert len(piece) <= 777
            pieces.append(piece)
    assert b"".join(pieces) == BIG
    assert all(len(piece) == 777 for piece in pieces[:-2])  # only the end may be short


async def test_stream_follows_redirects_and_reads_the_whole_body_raw(
    transport: ImageTransport, host: ImageHost
) -> None:
    async with (
        _session(transport) as session,
        session.stream("GET", normalise_image_url(host.url("/moved.png"))) as (url, response),
    ):
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    assert str(url) == host.url("/cat.png")
    assert body == host.png_bytes
    assert host.connections == 1
