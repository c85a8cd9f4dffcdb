"""Hostile and odd answers to the fetcher's own HTTP/1.1 (requests written out whole, answers
parsed by httptools): a raw TCP host on 127.0.0.1 sends exactly the bytes each test scripts,
and counts the connections and requests it receives."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from app.images.checker import ImageChecker
from app.images.errors import ImageUrlUnreachable
from app.images.fetcher import (
    MAX_HEAD_BYTES,
    FetchSession,
    HttpProtocolError,
    _request_bytes,
    create_image_transport,
)
from app.images.url_guard import UrlPolicy
from tests.conftest import make_settings
from tests.support.image_host import LoopbackResolver, make_image

PNG = make_image("PNG")
# What a host may push before the client gives up on an endless answer: what the client read
# (a head's worth, one read more) plus the kernel's buffers; far below what a client that
# kept reading to the deadline would take (hundreds of MiB on loopback).
BOUNDED = 1024 * 1024
UPGRADE = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
Script = Callable[[bytes, asyncio.StreamWriter], bytes | None]


class RawHost:
    """Answers each request head with what `script(head, writer)` returns (None: nothing,
    the script wrote or closed by itself)."""

    def __init__(self) -> None:
        self.script: Script = lambda head, writer: None
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                answer = self.script(head, writer)
                if answer is not None:
                    writer.write(answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def url(self, path: str = "/a.png") -> httpx.URL:
        return httpx.URL(f"http://127.0.0.1:{self.port}{path}")


@pytest.fixture
async def raw_host() -> AsyncIterator[RawHost]:
    host = RawHost()
    host.server = await asyncio.start_server(host._serve, "127.0.0.1", 0)
    host.port = host.server.sockets[0].getsockname()[1]
    try:
        yield host
    finally:
        host.server.close()


@pytest.fixture
async def session() -> AsyncIterator[FetchSession]:
    transport = create_image_transport(make_settings("sqlite+aiosqlite://"))
    async with FetchSession(
        transport=transport,
        resolver=LoopbackResolver(),
        policy=UrlPolicy.build(["127.0.0.1/32"], []),
        redirects_left=3,
        deadline=asyncio.get_running_loop().time() + 3,
    ) as session:
        yield session


def _answer(status: str = "200 OK", headers: str = "", body: bytes = b"") -> bytes:
    return f"HTTP/1.1 {status}\r\n{headers}".encode() + b"\r\n" + body


def _png(head: bytes, _: asyncio.StreamWriter) -> bytes:
    answer = _answer("200 OK", f"Content-Type: image/png\r\nContent-Length: {len(PNG)}\r\n")
    return answer if head.startswith(b"HEAD") else answer + PNG


async def test_head_then_get_share_the_connection_and_read_the_body(
    raw_host: RawHost, session: FetchSession
) -> None:
    raw_host.script = _png
    head = await session.request("HEAD", raw_host.url())
    got = await session.request("GET", raw_host.url(), read_limit=65536)
    assert (head.status_code, head.body) == (200, b"")
    assert head.headers["content-length"] == str(len(PNG))
    assert (got.body, got.complete) == (PNG, True)
    assert raw_host.connections == 1
    assert [r.split(b" ", 1)[0] for r in raw_host.requests] == [b"HEAD", b"GET"]


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n", id="status-not-a-number"),
        pytest.param(b"HTTP/9.9 200 OK\r\nContent-Length: 0\r\n\r\n", id="unknown-version"),
        pytest.param(b"ICY 200 OK\r\n\r\n", id="not-http"),
        pytest.param(b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", id="space-in-header-name"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", id="bare-cr-in-header-value"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX: a\nY: b\r\n\r\n", id="bare-lf-line-end"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", id="bad-length"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
            id="bad-chunk-size",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabc",
            id="two-content-lengths",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
            id="length-and-chunked",
        ),
        pytest.param(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", id="switching-protocols"),
    ],
)
async def test_malformed_answer_is_unreachable(
    raw_host: RawHost, session: FetchSession, answer: bytes
) -> None:
    raw_host.script = lambda head, writer: answer
    with pytest.raises(ImageUrlUnreachable):
        await session.request("GET", raw_host.url(), read_limit=65536)


async def test_control_character_in_a_header_value_is_read_as_is(
    raw_host: RawHost, session: FetchSession
) -> None:
    raw_host.script = lambda head, writer: _answer(
        "200 OK", 'ETag: "\x01"\r\nContent-Length: 0\r\n'
    )
    answer = await session.request("GET", raw_host.url(), read_limit=65536)
    assert answer.headers["etag"] == '"\x01"'  # the checker judges it (and drops it)


async def test_oversized_head_is_refused_without_reading_on(
    raw_host: RawHost, session: FetchSession
) -> None:
    filler = "".join(f"X-Filler-{n}: {'a' * 100}\r\n" for n in range(MAX_HEAD_BYTES // 100))
    raw_host.script = lambda head, writer: _answer("200 OK", filler) + b"x" * 10_000_000
    with pytest.raises(ImageUrlUnreachable):
        await session.request("GET", raw_host.url(), read_limit=65536)


class Flood:
    """A script that answers with `first`, then `unit` over and over until the client
    closes, counting the bytes the host got rid of (its send buffer kept small)."""

    def __init__(self, first: bytes, unit: bytes) -> None:
        self.first, self.blob = first, unit * (65536 // len(unit) + 1)
        self.sent = 0
        self.tasks: list[asyncio.Task[None]] = []

    def __call__(self, head: bytes, writer: asyncio.StreamWriter) -> None:
        self.tasks.append(asyncio.create_task(self._flood(writer)))

    async def _flood(self, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        writer.write(self.first)
        try:
            while self.sent < 1 << 30:
                writer.write(self.blob)
                await writer.drain()
                self.sent += len(self.blob)
        except OSError:
            pass  # the client closed

    async def bytes_sent(self) -> int:
        await asyncio.wait_for(asyncio.gather(*self.tasks), 5)
        return self.sent


async def _refused_by_protocol(session: FetchSession, url: httpx.URL, method: str = "GET") -> None:
    """The request fails on the answer's own faults, not by running into the deadline."""
    with pytest.raises(ImageUrlUnreachable) as caught:
        await session.request(method, url, read_limit=65536)
    assert isinstance(caught.value.__cause__, HttpProtocolError)


@pytest.mark.parametrize(
    ("first", "unit"),
    [
        pytest.param(b"HTTP/1.1 200 OK\r\n", b"X: y\r\n", id="endless-head"),
        pytest.param(b"", b"\r\n\r\n", id="endless-blank-lines"),
        pytest.param(b"", b"HTTP/1.1 100 Continue\r\n\r\n", id="endless-100-continue"),
        pytest.param(b"", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", id="endless-103"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
            b"X: y\r\n",
            id="endless-trailers",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: ",
            b"y",
            id="endless-trailer-value",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;a=",
            b"b",
            id="endless-chunk-extension",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"0",
            id="endless-leading-zeros-in-a-chunk-size",
        ),
    ],
)
async def test_endless_framing_is_refused_after_a_bounded_read(
    raw_host: RawHost, session: FetchSession, first: bytes, unit: bytes
) -> None:
    flood = Flood(first, unit)
    raw_host.script = flood
    await _refused_by_protocol(session, raw_host.url())
    assert await flood.bytes_sent() < BOUNDED


@pytest.mark.parametrize("status", ["099 Early", "000 Zero", "099"])
async def test_status_below_100_is_refused(
    raw_host: RawHost, session: FetchSession, status: str
) -> None:
    raw_host.script = lambda head, writer: _answer(status, "Content-Length: 0\r\n")
    await _refused_by_protocol(session, raw_host.url())


async def test_leading_blank_lines_are_refused(raw_host: RawHost, session: FetchSession) -> None:
    raw_host.script = lambda head, writer: b"\r\n\r\n" + _png(head, writer)
    await _refused_by_protocol(session, raw_host.url())


async def test_a_few_informational_answers_are_skipped(
    raw_host: RawHost, session: FetchSession
) -> None:
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" * 3
    raw_host.script = lambda head, writer: (
        b"HTTP/1.1 100 Continue\r\n\r\n" + hints + _png(head, writer)
    )
    got = await session.request("GET", raw_host.url(), read_limit=65536)
    assert (got.status_code, got.body) == (200, PNG)


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            UPGRADE,
            id="upgrade",
        ),
        pytest.param(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
            b"Content-Length: 4\r\n\r\nABCD",
            id="upgrade-with-length",
        ),
    ],
)
async def test_upgrade_answer_is_refused(
    raw_host: RawHost, session: FetchSession, answer: bytes
) -> None:
    raw_host.script = lambda head, writer: answer
    await _refused_by_protocol(session, raw_host.url())


async def test_upgrade_answer_is_refused_by_the_checker(raw_host: RawHost) -> None:
    raw_host.script = lambda head, writer: UPGRADE
    settings = make_settings("sqlite+aiosqlite://", image_fetch_allowed_ports=[raw_host.port])
    checker = ImageChecker(create_image_transport(settings), settings, LoopbackResolver())
    with pytest.raises(ImageUrlUnreachable):
        await checker.check(str(raw_host.url()))


@pytest.mark.parametrize(
    "after",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEFGH", id="second-answer"),
        pytest.param(
            b"HTTP/1.1 101 S\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n", id="upgrade-head"
        ),
        pytest.param(b"garbage\r\n\r\n", id="garbage"),
    ],
)
async def test_bytes_after_a_complete_answer_are_not_its_body(
    raw_host: RawHost, session: FetchSession, after: bytes
) -> None:
    def glued(head: bytes, _: asyncio.StreamWriter) -> bytes:
        return _answer("200 OK", "Content-Length: 4\r\n", b"ABCD" + after)

    raw_host.script = glued
    got = await session.request("GET", raw_host.url(), read_limit=65536)
    assert (got.body, got.complete) == (b"ABCD", True)
    await session.request("GET", raw_host.url(), read_limit=65536)
    assert raw_host.connections == 2  # a connection that said more than asked is not reused


async def test_trickling_body_ends_with_the_checks_deadline(raw_host: RawHost) -> None:
    async def trickle(writer: asyncio.StreamWriter) -> None:
        writer.write(_answer("200 OK", "Content-Type: image/png\r\nContent-Length: 100000\r\n"))
        try:
            for byte in PNG * 100:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)
        except OSError:
            pass

    tasks: list[asyncio.Task[None]] = []

    def slow(head: bytes, writer: asyncio.StreamWriter) -> bytes | None:
        if head.startswith(b"HEAD"):
            return _png(head, writer)
        tasks.append(asyncio.create_task(trickle(writer)))
        return None

    raw_host.script = slow
    settings = make_settings("sqlite+aiosqlite://", image_fetch_allowed_ports=[raw_host.port])
    checker = ImageChecker(create_image_transport(settings), settings, LoopbackResolver())
    with pytest.raises(ImageUrlUnreachable) as caught:
        await checker.check(str(raw_host.url()))  # the production path: deadline_enforced
    assert isinstance(caught.value.__cause__, TimeoutError)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)  # our side closed: the host stops


async def test_chunked_body_is_decoded_and_the_connection_kept(
    raw_host: RawHost, session: FetchSession
) -> None:
    def chunked(head: bytes, _: asyncio.StreamWriter) -> bytes:
        if head.startswith(b"HEAD"):
            return _answer("200 OK", "Transfer-Encoding: chunked\r\n")
        pieces = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (PNG[:10], PNG[10:]))
        return _answer("200 OK", "Transfer-Encoding: chunked\r\n", pieces + b"0\r\n\r\n")

    raw_host.script = chunked
    await session.request("HEAD", raw_host.url())
    got = await session.request("GET", raw_host.url(), read_limit=65536)
    assert (got.body, got.complete) == (PNG, True)
    assert raw_host.connections == 1


async def test_endless_chunked_body_is_cut_at_the_window(
    raw_host: RawHost, session: FetchSession
) -> None:
    async def endless(writer: asyncio.StreamWriter) -> None:
        writer.write(_answer("200 OK", "Transfer-Encoding: chunked\r\n"))
        chunk = b"%x\r\n%s\r\n" % (65536, b"z" * 65536)
        try:
            for _ in range(160_000):  # 10 GiB, if anyone read it all
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            return

    tasks: list[asyncio.Task[None]] = []
    raw_host.script = lambda head, writer: tasks.append(asyncio.create_task(endless(writer)))
    got = await session.request("GET", raw_host.url(), read_limit=65536)
    assert (len(got.body), got.complete) == (65536, False)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)  # our side closed: the host stops


async def test_chunked_body_cut_short_is_unreachable(
    raw_host: RawHost, session: FetchSession
) -> None:
    def cut(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_answer("200 OK", "Transfer-Encoding: chunked\r\n", b"ff\r\nabc"))
        writer.close()

    raw_host.script = cut
    with pytest.raises(ImageUrlUnreachable):
        await session.request("GET", raw_host.url(), read_limit=65536)


async def test_body_cut_short_of_its_length_is_unreachable(
    raw_host: RawHost, session: FetchSession
) -> None:
    def cut(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_answer("200 OK", "Content-Length: 1000\r\n", b"abc"))
        writer.close()

    raw_host.script = cut
    with pytest.raises(ImageUrlUnreachable):
        await session.request("GET", raw_host.url(), read_limit=65536)


async def test_body_without_length_ends_when_the_host_closes(
    raw_host: RawHost, session: FetchSession
) -> None:
    def until_close(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_answer("200 OK", "Content-Type: image/png\r\n", PNG))
        writer.close()

    raw_host.script = until_close
    got = await session.request("GET", raw_host.url(), read_limit=65536)
    assert (got.body, got.complete) == (PNG, True)
    await session.request("GET", raw_host.url(), read_limit=65536)
    assert raw_host.connections == 2  # a body ended by closing leaves no connection


async def test_trickling_head_ends_at_the_deadline(
    raw_host: RawHost, session: FetchSession
) -> None:
    async def trickle(writer: asyncio.StreamWriter) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)

    tasks: list[asyncio.Task[None]] = []
    raw_host.script = lambda head, writer: tasks.append(asyncio.create_task(trickle(writer)))
    started = asyncio.get_running_loop().time()
    with pytest.raises(ImageUrlUnreachable):
        await session.request("HEAD", raw_host.url())
    assert asyncio.get_running_loop().time() - started < 4.5  # the session's 3 s deadline
    for task in tasks:
        task.cancel()


async def test_head_answer_with_unasked_bytes_costs_the_connection(
    raw_host: RawHost, session: FetchSession
) -> None:
    def chatty(head: bytes, _: asyncio.StreamWriter) -> bytes:
        answer = _png(head, _)
        return answer + PNG if head.startswith(b"HEAD") else answer  # a body to a HEAD

    raw_host.script = chatty
    await session.request("HEAD", raw_host.url())
    got = await session.request("GET", raw_host.url(), read_limit=65536)
    assert got.body == PNG
    assert raw_host.connections == 2


async def test_connection_close_is_honoured(raw_host: RawHost, session: FetchSession) -> None:
    def closing(head: bytes, _: asyncio.StreamWriter) -> bytes:
        return _answer("200 OK", "Connection: close\r\nContent-Length: 0\r\n")

    raw_host.script = closing
    await session.request("HEAD", raw_host.url())
    await session.request("HEAD", raw_host.url())
    assert raw_host.connections == 2


async def test_informational_answers_are_skipped(raw_host: RawHost, session: FetchSession) -> None:
    def early_hints(head: bytes, writer: asyncio.StreamWriter) -> bytes:
        return b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + _png(head, writer)

    raw_host.script = early_hints
    got = await session.request("GET", raw_host.url(), read_limit=65536)
    assert (got.status_code, got.body) == (200, PNG)


@pytest.mark.parametrize(
    "headers",
    [
        {"If-None-Match": '"a"\r\nX-Injected: 1'},
        {"X\r\nY": "1"},
        {"If-None-Match": "\x00"},
        {"If-None-Match": '"a"\n'},
        {"If-None-Match": '"a"\r'},
        {"If-None-Match": '"a"\r\n'},
        {"If-None-Match": '"a\x00b"'},
        {"X-Name\n": "1"},
        {"X-Name\r": "1"},
        {"X\x00Name": "1"},
    ],
)
def test_request_with_a_line_break_in_a_header_cannot_be_written(
    headers: dict[str, str],
) -> None:
    with pytest.raises(HttpProtocolError):
        _request_bytes("GET", httpx.URL("http://127.0.0.1/a.png"), headers)


async def test_header_that_cannot_be_written_sends_nothing(
    raw_host: RawHost, session: FetchSession
) -> None:
    raw_host.script = _png
    with pytest.raises(ImageUrlUnreachable):
        await session.request("HEAD", raw_host.url(), headers={"If-None-Match": '"a"\r\nX: 1'})
    await asyncio.sleep(0.05)
    assert raw_host.requests == []


def test_request_is_written_as_one_head() -> None:
    request = _request_bytes(
        "HEAD", httpx.URL("http://images.example:8080/a%20b.png?x=1"), {"Accept": "image/*"}
    )
    assert request == (
        b"HEAD /a%20b.png?x=1 HTTP/1.1\r\nHost: images.example:8080\r\nAccept: image/*\r\n\r\n"
    )
