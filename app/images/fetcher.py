"""The network half of the URL check: resolve, judge, connect to the judged address, follow
redirects by hand, and never read more of a body than the caller asked for."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol, cast

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


def create_image_transport(
    settings: Settings, *, verify: ssl.SSLContext | bool = True
) -> httpx.AsyncHTTPTransport:
    """The one transport every URL check shares (made in the lifespan, closed on shutdown).

    A transport, not a client: no cookie jar carrying state from one user's check to the
    next, no automatic redirects, no proxy or certificate settings from the environment.
    Connections are not kept alive: each is opened to an address judged for one check, and
    a TLS connection verified for one host name must not carry another host's request.
    `verify` is for tests, which trust their own certificate authority.
    """
    return httpx.AsyncHTTPTransport(
        verify=verify,
        trust_env=False,
        retries=0,
        limits=httpx.Limits(
            max_connections=settings.image_fetch_concurrency, max_keepalive_connections=0
        ),
    )


@dataclass(frozen=True)
class Fetched:
    """The final answer to one request, after redirects, with its body cut to a window."""

    url: httpx.URL
    status_code: int
    headers: httpx.Headers
    body: bytes = b""
    complete: bool = True  # whether `body` is the whole body


@dataclass
class FetchSession:
    """The requests of one URL check. Every hop (the first URL and each redirect) is judged
    again: scheme, port, and every address its host resolves to. A host is resolved once per
    check, and the connection goes to the address that was judged, never to a second
    lookup; TLS still verifies the certificate for the URL's host name, and the Host
    header stays the URL's."""

    transport: httpx.AsyncBaseTransport
    resolver: Resolver
    policy: UrlPolicy
    redirects_left: int
    deadline: float  # loop time by which the check must end
    _addresses: dict[str, list[IPAddress]] = field(default_factory=dict)
    _visited: set[str] = field(default_factory=set)

    async def request(
        self,
        method: str,
        url: httpx.URL,
        *,
        headers: dict[str, str] | None = None,
        read_limit: int = 0,
    ) -> Fetched:
        """Send `method` to `url`, following redirects; read at most `read_limit` bytes."""
        async with self.stream(method, url, headers=headers) as (final_url, response):
            body, complete = b"", True
            if read_limit > 0:
                try:
                    body, complete = await _read_window(response, read_limit)
                except httpx.TransportError as exc:
                    raise ImageUrlUnreachable() from exc
            return Fetched(final_url, response.status_code, response.headers, body, complete)

    @asynccontextmanager
    async def stream(
        self, method: str, url: httpx.URL, *, headers: dict[str, str] | None = None
    ) -> AsyncIterator[tuple[httpx.URL, httpx.Response]]:
        """Send `method` to `url`, following redirects, and hand over the final URL and
        response with its body unread; the caller reads it (`aiter_raw`, within this
        session's deadline) and the response is closed when the block ends."""
        self._visited.add(str(url))
        while True:
            response = await self._send(method, url, headers or {})
            try:
                location = response.headers.get("location")
                if response.status_code in REDIRECT_STATUSES and location:
                    url = self._next_hop(url, location)
                    continue
                yield url, response
                return
            finally:
                await response.aclose()

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

    async def _send(self, method: str, url: httpx.URL, headers: dict[str, str]) -> httpx.Response:
        if not self.policy.port_allowed(url):
            raise ImageUrlForbidden("The image URL uses a port that is not allowed.")
        host = url.raw_host.decode("ascii")
        last_error: Exception | None = None
        for address in (await self._judged_addresses(url))[:MAX_CONNECT_ATTEMPTS]:
            request = httpx.Request(
                method,
                url.copy_with(host=str(address)),
                headers={
                    "Host": url.netloc.decode("ascii"),
                    "User-Agent": USER_AGENT,
                    "Accept": "image/*,*/*;q=0.8",
                    # Raw bytes only: a compressed body could expand far beyond the window.
                    "Accept-Encoding": "identity",
                    **headers,
                },
                extensions={"sni_hostname": host, "timeout": self._timeouts()},
            )
            try:
                return await self.transport.handle_async_request(request)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last_error = exc
            except httpx.TransportError as exc:
                raise ImageUrlUnreachable() from exc
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

    def _timeouts(self) -> dict[str, float]:
        # The check's deadline (asyncio.timeout) is what ends it; these only keep each
        # socket operation inside that deadline too.
        remaining = max(self.deadline - asyncio.get_running_loop().time(), 0.001)
        return {"connect": remaining, "read": remaining, "write": remaining, "pool": remaining}


async def _read_window(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the body, as they came off the wire; then stop reading."""
    chunks: list[bytes] = []
    size = 0
    chunk_stream = cast(AsyncGenerator[bytes, None], response.aiter_raw())
    async with aclosing(chunk_stream) as stream:
        async for chunk in stream:
            chunks.append(chunk[: limit - size])
            size += len(chunks[-1])
            if size >= limit:
                return b"".join(chunks), False
    return b"".join(chunks), True
