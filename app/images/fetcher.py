"""The network half of the URL check: resolve, judge, connect to the judged address, follow
redirects by hand, and never read more of a body than the caller asked for.

HTTP/1.1 is spoken over asyncio streams: requests are written out whole, answers parsed by
httptools (llhttp, the parser of Node.js and uvicorn). A check's
requests (the HEAD, then the GET) share one connection when they go to the same scheme, host
name and port, and the connection is closed when the check ends. Nothing is pooled across
checks: no connection judged for one check, or verified for one host name, ever carries
another check's request.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import httptools
import httpx

from app.config import Settings
from app.images.errors import (
    ImageUrlForbidden,
    ImageUrlInvalid,
    ImageUrlTooManyRedirects,
    ImageUrlUnreachable,
)
from app.images.url_guard import (
    IPAddress,
    UrlPolicy,
    effective_port,
    normalise_image_url,
    parse_ip_literal,
)

USER_AGENT = "GalleryAPI-ImageCheck/1.0"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# A host name may resolve to many addresses; trying a few covers a dead one without
# letting a hostile DNS answer turn one check into a long series of connection attempts.
MAX_CONNECT_ATTEMPTS = 3
# The status line and headers of one answer, at most (a larger head is refused).
MAX_HEAD_BYTES = 16 * 1024
# What else of an answer may be framing rather than body: trailers and chunk extensions
# together, and a little per chunk for its size line (a host that sends endless trailers, a
# chunk size of endless zeros or an endless extension is refused after this much).
MAX_FRAMING_BYTES = MAX_HEAD_BYTES
FRAMING_PER_CHUNK = 32
# Informational (1xx) answers skipped before the real one, at most.
MAX_INFORMATIONAL = 5
# A redirect's body is read to its end, so that the connection can serve the next hop, only
# when it is this small; a larger one costs the connection instead.
MAX_DRAINED_BODY = 16 * 1024
READ_CHUNK = 65536
TLS_SHUTDOWN_SECONDS = 2.0
_BASE_HEADERS = {
    "User-Agent": USER_AGENT,
    "Accept": "image/*,*/*;q=0.8",
    # Raw bytes only: a compressed body could expand far beyond the window.
    "Accept-Encoding": "identity",
}


class HttpProtocolError(Exception):
    """An answer that breaks HTTP/1.1 or our limits on it (the connection is then useless),
    or a request that cannot be written (a header value with a line break)."""


_NETWORK_ERRORS = (OSError, HttpProtocolError)


class Resolver(Protocol):
    """Turns a host name into the addresses it stands for (tests inject their own)."""

    async def resolve(self, host: str, port: int) -> Sequence[str]: ...


class SystemResolver:
    """The operating system's resolver (getaddrinfo), run in a thread pool of its own so
    that a stalled DNS server cannot starve the threads the rest of the app relies on."""

    def __init__(self, max_workers: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="image-dns")

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        lookup = functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        try:
            answers = await asyncio.get_running_loop().run_in_executor(self._executor, lookup)
        except (OSError, UnicodeError) as exc:
            raise ImageUrlUnreachable(
                "The image URL's host name could not be resolved; check the address."
            ) from exc
        return [str(answer[4][0]) for answer in answers]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class ImageTransport:
    """Opens the outbound connections of URL checks (one per app, made in the lifespan):
    TCP to an address already judged, TLS verified for the URL's host name (also sent as
    SNI). No proxy or certificate settings from the environment, no cookie jar, no pool: a
    connection belongs to one check. A subclass may refuse addresses before connecting (the
    tests' loopback-only transport does). `verify` is for tests, which trust their own
    certificate authority."""

    def __init__(self, *, verify: ssl.SSLContext | bool = True) -> None:
        self._tls = httpx.create_ssl_context(verify=verify, trust_env=False)

    async def connect(
        self, address: str, port: int, *, tls_server_name: str | None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to `address` (an IP literal), with TLS for `tls_server_name` when
        given; OSError (ssl.SSLError included) when it cannot be made."""
        if tls_server_name is None:
            return await asyncio.open_connection(address, port, limit=READ_CHUNK)
        return await asyncio.open_connection(
            address,
            port,
            ssl=self._tls,
            server_hostname=tls_server_name,
            limit=READ_CHUNK,
            ssl_shutdown_timeout=TLS_SHUTDOWN_SECONDS,
        )

    async def aclose(self) -> None:
        """Nothing is held between checks; here so the lifespan treats every transport alike."""


def create_image_transport(
    settings: Settings, *, verify: ssl.SSLContext | bool = True
) -> ImageTransport:
    """The one transport every URL check shares (made in the lifespan, closed on shutdown).
    Connections are bounded by the checker: `IMAGE_FETCH_CONCURRENCY` checks at once, each
    holding one connection at a time."""
    return ImageTransport(verify=verify)


@dataclass(frozen=True)
class Fetched:
    """The final answer to one request, after redirects, with its body cut to a window.
    `headers` has lower-case names; a repeated header's values are joined with ", "."""

    url: httpx.URL
    status_code: int
    headers: Mapping[str, str]
    body: bytes = b""
    complete: bool = True  # whether `body` is the whole body


# What may go on a request line or in a header we send: visible ASCII, spaces and tabs in
# values, never a line break (a stored validator or a URL could otherwise add a header).
# (fullmatch: `$` would also match before a final line feed.)
_TARGET = re.compile(rb"[\x21-\x7e]+")
_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(r"[\x20-\x7e\t]*")


def _request_bytes(method: str, url: httpx.URL, headers: Mapping[str, str]) -> bytes:
    """The request's head, written out: no body, so nothing else follows it."""
    target = url.raw_path
    if method not in ("GET", "HEAD") or not _TARGET.fullmatch(target):
        raise HttpProtocolError("not a request this fetcher sends")
    lines = [b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method.encode(), target, url.netloc)]
    for name, value in headers.items():
        if not (_FIELD_NAME.fullmatch(name) and _FIELD_VALUE.fullmatch(value)):
            raise HttpProtocolError(f"header {name!r} cannot be sent")
        lines.append(b"%s: %s\r\n" % (name.encode("ascii"), value.encode("ascii")))
    lines.append(b"\r\n")
    return b"".join(lines)


class _NextMessage(Exception):
    """Raised in the parser's callback to stop it where a second answer would begin."""


class _Message:
    """What the parser (httptools, over llhttp) found in one answer: the head's fields, body
    pieces not yet taken, and whether the answer ended. The parser stops where a second
    answer would begin: what follows an answer is never parsed as part of it."""

    __slots__ = (
        "body",
        "body_bytes",
        "chunks",
        "complete",
        "extra",
        "head_done",
        "headers",
        "keep_alive",
        "messages",
        "parser",
    )

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        # Control characters inside a header value are let through, as h11 did (RFC 9110
        # lets a recipient keep them): nothing takes a value as is (validators and types are
        # judged again). Framing stays strict: a bare CR, a bad name, two lengths, a length
        # with chunks, a bad chunk size are all refused.
        self.parser.set_dangerous_leniencies(lenient_headers=True)
        self.keep_alive = False
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.complete = False
        self.messages = 0
        self.extra = False  # bytes after the answer: the host says more than it was asked
        self.head_done = False
        self.body_bytes = 0  # in all, taken or not
        self.chunks = 0

    def on_message_begin(self) -> None:
        self.messages += 1
        if self.messages > 1:
            self.extra = True
            raise _NextMessage

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head_done:  # trailers are parsed (and limited), never kept
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_done = True
        # Asked now: once the answer is complete, the parser has forgotten its head.
        self.keep_alive = self.parser.should_keep_alive()

    def on_chunk_header(self) -> None:
        self.chunks += 1

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.body_bytes += len(body)

    def on_message_complete(self) -> None:
        self.complete = True


class _Answer:
    """One answer's status line and head, parsed; the parser stays for its body."""

    __slots__ = ("fed", "message", "parser", "status_code", "until_close")

    def __init__(self, head: bytes) -> None:
        self.message = _Message()
        self.parser = self.message.parser
        self.fed = 0  # bytes given to the parser, head included
        self.feed(head)
        self.status_code = self.parser.get_status_code()
        if self.message.messages == 0 or self.status_code < 100:
            raise HttpProtocolError("not an answer's status line")
        self.until_close = False  # the body ends when the host closes the connection

    def feed(self, data: bytes) -> None:
        message = self.message
        self.fed += len(data)
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if not message.complete:
                raise HttpProtocolError(str(exc)) from exc
            message.extra = True  # the answer is whole; what follows it is not ours
        if message.complete:
            return
        framing = self.fed - message.body_bytes
        if framing > MAX_HEAD_BYTES + MAX_FRAMING_BYTES + FRAMING_PER_CHUNK * message.chunks:
            raise HttpProtocolError("answer framing too large")


class _Connection:
    """One HTTP/1.1 connection to a judged address, for one scheme, host name and port.
    Requests are written out whole (`_request_bytes`); an answer's head is read up to its
    blank line (at most `MAX_HEAD_BYTES`) and parsed by httptools (llhttp, strict), its
    body fed to the same parser as it arrives."""

    def __init__(
        self, key: tuple[str, str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.key = key
        self.reader = reader
        self.writer = writer
        self.reusable = True  # between answers, and the host did not say it would close
        self.buffer = b""  # received, not parsed yet

    async def exchange(self, method: str, url: httpx.URL, headers: dict[str, str]) -> _Answer:
        """Send a request without a body; the answer's status line and head."""
        request = _request_bytes(method, url, headers)
        self.reusable = False
        self.writer.write(request)
        answer = await self._final_answer()
        message, status = answer.message, answer.status_code
        if method == "HEAD" or status in (204, 304):
            # No body, whatever the head says (llhttp cannot be told a HEAD's answer has
            # none): the answer ends with its head; anything after it is unasked for.
            message.complete = True
            message.extra = message.extra or bool(self.buffer)
        elif not message.complete:
            # Neither a length nor chunks: the body ends when the host closes (HTTP/1.0).
            fields = {name.lower(): value.lower() for name, value in message.headers}
            answer.until_close = b"content-length" not in fields and (
                b"chunked" not in fields.get(b"transfer-encoding", b"")
            )
        if message.complete:
            self.answer_done(answer)
        return answer

    async def _final_answer(self) -> _Answer:
        """The answer's head, after at most `MAX_INFORMATIONAL` 1xx answers."""
        for _ in range(MAX_INFORMATIONAL + 1):
            answer = _Answer(await self._read_head())
            if answer.status_code == 101 or answer.message.extra:  # nobody asked to switch
                raise HttpProtocolError("unexpected answer")
            if answer.status_code >= 200:
                return answer  # 1xx: the answer follows
        raise HttpProtocolError("too many informational answers")

    async def _read_head(self) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                end += 4
                if end > MAX_HEAD_BYTES:
                    raise HttpProtocolError("answer head too large")
                head, self.buffer = self.buffer[:end], self.buffer[end:]
                return head
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise HttpProtocolError("answer head too large")
            data = await self.reader.read(READ_CHUNK)
            if not data:
                raise HttpProtocolError("the connection ended before an answer")
            self.buffer += data

    async def receive(self) -> bytes:
        """The next bytes of a body: what is buffered, else the next read (b"" at the end)."""
        if self.buffer:
            data, self.buffer = self.buffer, b""
            return data
        return await self.reader.read(READ_CHUNK)

    def answer_done(self, answer: _Answer) -> None:
        message = answer.message
        self.reusable = message.keep_alive and not message.extra and not self.buffer

    def close(self) -> None:
        if self.reusable:
            # Between answers: a polite close, as a browser's (TLS says goodbye too, waiting
            # at most TLS_SHUTDOWN_SECONDS for the host's reply, in the background).
            self.writer.close()
        else:
            # In the middle of an answer (a body left unread, an error): nothing more is owed.
            self.writer.transport.abort()


class FetchResponse:
    """An answer whose body has not been read yet (`FetchSession.stream`)."""

    def __init__(
        self,
        url: httpx.URL,
        answer: _Answer,
        connection: _Connection,
        deadline: float | None,  # None: the caller's own timeout covers every read
    ) -> None:
        self.url = url
        self.status_code = answer.status_code
        headers: dict[str, str] = {}
        for raw_name, raw_value in answer.message.headers:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.headers: Mapping[str, str] = headers
        self._complete = answer.message.complete  # the parser has seen the body's end
        self._answer = answer
        self._connection = connection
        self._deadline = deadline
        self._pending = b""  # received by a look ahead, not yet given to the caller

    @property
    def finished(self) -> bool:
        """Whether the whole body has been read (and given to the caller)."""
        return self._complete and not self._pending

    async def iter_body(self, limit: int) -> AsyncIterator[bytes]:
        """The body as it comes off the wire, cut at `limit` bytes in all; `finished` then
        tells whether that was its end. Each read ends by the session's deadline."""
        size = 0
        while size < limit:
            if not self._pending:
                if self._complete:
                    break
                try:
                    if self._deadline is None:
                        data = await self._connection.receive()
                    else:
                        async with asyncio.timeout_at(self._deadline):
                            data = await self._connection.receive()
                    self._take(data)
                except (TimeoutError, *_NETWORK_ERRORS) as exc:
                    raise ImageUrlUnreachable() from exc
                continue
            chunk, self._pending = self._pending[: limit - size], self._pending[limit - size :]
            size += len(chunk)
            yield chunk
        self.settle(keep_data=True)

    def _take(self, data: bytes) -> None:
        """Parse `data` (b"": the host closed) into the pending body and the end."""
        answer = self._answer
        if not data:
            if not answer.until_close:
                raise HttpProtocolError("the connection ended inside the body")
            answer.message.complete = True
        else:
            answer.feed(data)
        message = answer.message
        if message.body:
            self._pending += b"".join(message.body)
            message.body.clear()
        if message.complete:
            self._complete = True
            if data:
                self._connection.answer_done(answer)
            else:
                self._connection.reusable = False

    def aiter_raw(self) -> AsyncIterator[bytes]:
        """The whole body as it comes off the wire (as httpx's `Response.aiter_raw`): the
        caller counts what it keeps; the session's deadline still ends every read."""
        return self.iter_body(sys.maxsize)

    async def read(self, limit: int) -> tuple[bytes, bool]:
        """At most `limit` bytes of the body, and whether they are all of it."""
        chunks = [chunk async for chunk in self.iter_body(limit)]
        return b"".join(chunks), self.finished

    def settle(self, *, keep_data: bool = False) -> None:
        """Take what is already received (the end of a bodiless answer, the end right after
        the last byte read), without waiting for the network; with `keep_data`, data found
        on the way is kept for the next `iter_body`, else dropped."""
        if not self._complete and not (keep_data and self._pending) and self._connection.buffer:
            data, self._connection.buffer = self._connection.buffer, b""
            try:
                self._take(data)
            except HttpProtocolError:
                self._connection.reusable = False
        if not keep_data:
            self._pending = b""


@dataclass
class FetchSession:
    """The requests of one URL check. Every hop (the first URL and each redirect) is judged
    again: scheme, port, and every address its host resolves to. A host is resolved once per
    check, and the connection goes to the address that was judged, never to a second
    lookup; TLS still verifies the certificate for the URL's host name, and the Host
    header stays the URL's. The next request to the same scheme, host name and port reuses
    the connection; `close` (or leaving `async with`) closes it."""

    transport: ImageTransport
    resolver: Resolver
    policy: UrlPolicy
    redirects_left: int
    deadline: float  # loop time by which the check must end
    # True when the caller runs the whole session under `asyncio.timeout_at(deadline)`
    # (`ImageChecker.fetch_session`): no request or read then sets a timer of its own.
    deadline_enforced: bool = False
    _addresses: dict[str, list[IPAddress]] = field(default_factory=dict)
    _visited: set[str] = field(default_factory=set)
    _connection: _Connection | None = None

    async def __aenter__(self) -> FetchSession:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def request(
        self,
        method: str,
        url: httpx.URL,
        *,
        headers: dict[str, str] | None = None,
        read_limit: int = 0,
    ) -> Fetched:
        """Send `method` to `url`, following redirects; read at most `read_limit` bytes."""
        async with self.stream(method, url, headers=headers) as (_, response):
            body, complete = b"", True
            if read_limit > 0:
                body, complete = await response.read(read_limit)
            return Fetched(response.url, response.status_code, response.headers, body, complete)

    @asynccontextmanager
    async def stream(
        self, method: str, url: httpx.URL, *, headers: dict[str, str] | None = None
    ) -> AsyncIterator[tuple[httpx.URL, FetchResponse]]:
        """Send `method` (without a body) to `url`, following redirects, and yield the final
        URL and answer with its body unread: `iter_body(limit)` streams it with a byte cap.
        A body not read to its end costs the connection when the block ends."""
        self._visited.add(str(url))
        request_headers = {**_BASE_HEADERS, **(headers or {})}
        while True:
            response = await self._send(method, url, request_headers)
            location = response.headers.get("location")
            if response.status_code in REDIRECT_STATUSES and location:
                async for _ in response.iter_body(MAX_DRAINED_BODY):
                    pass
                self._release(response)
                url = self._next_hop(url, location)
                continue
            try:
                yield url, response
            finally:
                self._release(response)
            return

    def _release(self, response: FetchResponse) -> None:
        response.settle()
        if not response.finished:
            self.close()

    def _next_hop(self, current: httpx.URL, location: str) -> httpx.URL:
        if self.redirects_left <= 0:
            raise ImageUrlTooManyRedirects()
        self.redirects_left -= 1
        try:
            target = normalise_image_url(str(current.join(location)))
        except (httpx.InvalidURL, ValueError, ImageUrlInvalid) as exc:
            raise ImageUrlInvalid(
                "The image URL redirects to an address that is not a valid http(s) URL."
            ) from exc
        if str(target) in self._visited:
            raise ImageUrlTooManyRedirects()
        self._visited.add(str(target))
        return target

    async def _send(self, method: str, url: httpx.URL, headers: dict[str, str]) -> FetchResponse:
        if not self.policy.port_allowed(url):
            raise ImageUrlForbidden("The image URL uses a port that is not allowed.")
        host = url.raw_host.decode("ascii")
        port = effective_port(url)
        key = (url.scheme, host, port)
        addresses = await self._judged_addresses(url)
        if self.deadline_enforced:
            return await self._exchange(method, url, headers, key, addresses)
        try:
            async with asyncio.timeout_at(self.deadline):
                return await self._exchange(method, url, headers, key, addresses)
        except TimeoutError as exc:
            self.close()
            raise ImageUrlUnreachable() from exc

    async def _exchange(
        self,
        method: str,
        url: httpx.URL,
        headers: dict[str, str],
        key: tuple[str, str, int],
        addresses: list[IPAddress],
    ) -> FetchResponse:
        connection = self._connection
        if connection is not None and connection.key == key and connection.reusable:
            try:
                answer = await connection.exchange(method, url, headers)
                return FetchResponse(url, answer, connection, self._read_deadline)
            except _NETWORK_ERRORS:
                pass  # the host closed the kept connection meanwhile: one fresh try
        return await self._connect_and_send(method, url, headers, key, addresses)

    @property
    def _read_deadline(self) -> float | None:
        return None if self.deadline_enforced else self.deadline

    async def _connect_and_send(
        self,
        method: str,
        url: httpx.URL,
        headers: dict[str, str],
        key: tuple[str, str, int],
        addresses: list[IPAddress],
    ) -> FetchResponse:
        self.close()
        tls_server_name = key[1] if key[0] == "https" else None
        last_error: Exception | None = None
        for address in addresses[:MAX_CONNECT_ATTEMPTS]:
            try:
                reader, writer = await self.transport.connect(
                    str(address), key[2], tls_server_name=tls_server_name
                )
            except OSError as exc:  # refused, unreachable, or a certificate not for the host
                last_error = exc
                continue
            connection = self._connection = _Connection(key, reader, writer)
            try:
                answer = await connection.exchange(method, url, headers)
            except _NETWORK_ERRORS as exc:
                self.close()
                raise ImageUrlUnreachable() from exc
            return FetchResponse(url, answer, connection, self._read_deadline)
        raise ImageUrlUnreachable() from last_error

    async def _judged_addresses(self, url: httpx.URL) -> list[IPAddress]:
        """The addresses to connect to for this URL's host; refused when ANY is forbidden."""
        host = url.raw_host.decode("ascii")
        if host in self._addresses:
            return self._addresses[host]
        literal = parse_ip_literal(host)
        if literal is not None:
            candidates: list[IPAddress] = [literal]
        else:
            answers = await self.resolver.resolve(host, effective_port(url))
            candidates = []
            for answer in answers:
                try:
                    candidates.append(ipaddress.ip_address(answer))
                except ValueError as exc:
                    # An answer we cannot read cannot be judged: refuse rather than guess.
                    raise ImageUrlForbidden() from exc
        if not candidates:
            raise ImageUrlUnreachable(
                "The image URL's host name could not be resolved; check the address."
            )
        if not all(self.policy.address_allowed(address) for address in candidates):
            raise ImageUrlForbidden()
        judged: list[IPAddress] = []
        for address in candidates:
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped  # the same destination, reached over IPv4
            if address not in judged:
                judged.append(address)
        self._addresses[host] = judged
        return judged
