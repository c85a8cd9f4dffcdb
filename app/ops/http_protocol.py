"""uvicorn's httptools protocol with bounds on what a client can make the server hold before
its request starts: the request headers' size (MAX_HEADER_BYTES) and the time to send them
(HEADER_TIMEOUT), even with no proxy in front.

uvicorn bounds neither with httptools: llhttp hands over header lines of any length, and no
timer runs until a response has been sent (the keep-alive timer), so a client that opens a
connection and trickles a byte now and then holds it, and its buffers, for good. Its h11
protocol bounds the size only (answering 400, not 431) and is a pure-Python parser. So
`gallery serve` runs this subclass (`--http app.ops.http_protocol:BoundedHttpToolsProtocol`),
which keeps httptools' speed and adds both limits around the parser.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from dataclasses import dataclass
from itertools import chain
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.config import Settings

logger = logging.getLogger(__name__)

_TOO_LARGE_BODY = json.dumps(
    {"detail": "The request headers are too large.", "code": "headers_too_large"}
).encode()
_TOO_LARGE_RESPONSE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"content-length: " + str(len(_TOO_LARGE_BODY)).encode() + b"\r\n"
    b"connection: close\r\n"
    b"\r\n" + _TOO_LARGE_BODY
)


class HeadersTooLarge(Exception):
    """Raised from a parser callback to stop parsing a request whose headers are too large."""


@dataclass(frozen=True)
class HeaderLimits:
    timeout: float
    max_bytes: int


@functools.cache
def header_limits() -> HeaderLimits:
    """The limits, from the same settings the app reads, once per worker process (uvicorn
    builds the protocol per connection and gives it only its own config)."""
    settings = Settings()
    return HeaderLimits(timeout=settings.header_timeout, max_bytes=settings.max_header_bytes)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Refuse request headers over MAX_HEADER_BYTES with 431 and close; close a connection
    whose request headers are not complete HEADER_TIMEOUT seconds after they began."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = header_limits()
        self._header_timeout = limits.timeout
        self._max_header_bytes = limits.max_bytes
        # Bytes received since the current request's headers began; counted from the raw
        # stream, since llhttp hands a header line over only once it is whole.
        self._header_bytes = 0
        self._headers_too_large = False
        self._reading_headers = True
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        # Zero after a request that arrived whole: the common case stops here.
        if not self._reading_headers or not self._header_bytes or self.transport.is_closing():
            return
        if self._header_bytes > self._max_header_bytes:
            self._refuse_oversized_headers()
        elif self._header_timer is None:
            # A kept-alive connection's next request began in this read and its headers are
            # not complete. (Armed after parsing: a request that arrives whole never costs a
            # timer. Bytes after a whole request in the same read are not counted; if they
            # stall, uvicorn's keep-alive timer, armed when the answer is sent, closes.)
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._header_bytes = 0
        self._cancel_header_timer()
        # Headers that arrived whole in one read were never looked at by the raw count.
        headers = self.headers
        size = len(self.url) + 4 * len(headers) + sum(map(len, chain.from_iterable(headers)))
        if size > self._max_header_bytes:
            # uvicorn turns a callback's exception into its "invalid request" answer, which
            # send_400_response below replaces with the 431 (no request cycle is started).
            self._headers_too_large = True
            raise HeadersTooLarge()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._headers_too_large:
            self._refuse_oversized_headers()
            return
        super().send_400_response(msg)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # Whatever comes next on this connection is the next request's headers.
        self._reading_headers = True

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self._header_timeout, self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        logger.debug("closing a connection whose request headers took too long")
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request stalls while the previous answer is being made: that
            # answer is finished, then the connection closes.
            self.cycle.keep_alive = False
            return
        self.transport.close()

    def _refuse_oversized_headers(self) -> None:
        self._cancel_header_timer()
        logger.debug("refusing request headers larger than %d bytes", self._max_header_bytes)
        if self.cycle is not None and not self.cycle.response_complete:
            # An answer is still being written on this connection: just stop reading.
            self.cycle.keep_alive = False
            self.transport.pause_reading()
            return
        self.transport.write(_TOO_LARGE_RESPONSE)
        self.transport.close()
