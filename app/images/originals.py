"""An image's original bytes, fetched again when they are needed: streamed to a browser by
the proxy, or read whole for the thumbnailer.

Both go through the URL check's fetcher (`ImageChecker.fetch_session`): every SSRF rule,
connections to judged addresses only, redirects judged again, one shared turn and one
deadline. The type always comes from the first bytes, never from the host's headers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import cast

from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.errors import AppError
from app.images.checker import (
    SNIFF_WINDOW,
    ImageChecker,
    SniffedImage,
    parse_content_length,
    sniff_image,
)
from app.images.errors import (
    ImageCheckFailed,
    ImageTooLarge,
    ImageUpstreamUnavailable,
)
from app.images.fetcher import FetchResponse
from app.images.url_guard import normalise_image_url

logger = logging.getLogger(__name__)

# What the proxy adds to an original: the sniffed type alone decides how a browser treats
# it, and even an image type that a browser renders as a document (SVG) runs no script and
# loads nothing.
PROXY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Original:
    """An original image, read whole, and what its first bytes say it is."""

    data: bytes
    sniffed: SniffedImage


def _too_large(max_bytes: int) -> ImageTooLarge:
    return ImageTooLarge(f"The image is larger than the {max_bytes} bytes the server accepts.")


def _judge_answer(response: FetchResponse, max_bytes: int) -> None:
    if not 200 <= response.status_code < 300:
        raise ImageUpstreamUnavailable(
            f"The image's host answered HTTP {response.status_code}; try again later."
        )
    declared = parse_content_length(response.headers.get("content-length"))
    if declared is not None and declared > max_bytes:
        raise _too_large(max_bytes)


def _judge_type(head: bytes, allowed: frozenset[str], *, complete: bool) -> SniffedImage:
    sniffed = sniff_image(head, complete=False)
    if sniffed is None or sniffed.content_type not in allowed:
        raise ImageUpstreamUnavailable(
            "The image's host no longer serves an image of an allowed type."
        )
    if complete and not head:
        raise ImageUpstreamUnavailable("The image's host served no data.")
    return sniffed


@asynccontextmanager
async def _upstream(checker: ImageChecker, url: str) -> AsyncIterator[FetchResponse]:
    """The GET of the original under the check's rules (the checker's one-connection
    fetcher); failures of the fetch itself, before or while the body is read, are
    `ImageUpstreamUnavailable` (the URL passed its check once: it is the host that fails)."""
    try:
        async with (
            checker.fetch_session() as session,
            session.stream("GET", normalise_image_url(url)) as (_, response),
        ):
            yield response
    except ImageCheckFailed as exc:
        raise ImageUpstreamUnavailable() from exc


async def fetch_original(checker: ImageChecker, url: str, max_bytes: int) -> Original:
    """The whole original at `url`, at most `max_bytes` (`ImageTooLarge` beyond), of an
    allowed type by its first bytes (`ImageUpstreamUnavailable` otherwise)."""
    async with _upstream(checker, url) as response:
        _judge_answer(response, max_bytes)
        # One byte over the cap tells a body that is too large from one that is exactly it.
        data, _ = await response.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise _too_large(max_bytes)
    return Original(data, _judge_type(data, checker.allowed_types, complete=True))


class OriginalResponse(Response):
    """Streams an original from its host to the client, cut at `max_bytes`.

    Everything, from the first DNS lookup to the last byte sent, happens inside `__call__`
    and under the fetch's one deadline, so a slow host or a slow client cannot hold the
    connection to the host (or the turn it takes) any longer. Before the first byte is sent
    a failure is an ordinary JSON error (502 `image_upstream_unavailable`, 422
    `image_too_large` when the host declares too many bytes); after it, the response is cut
    off: the body ends without its final chunk, so no client mistakes it for the whole file.
    None of the host's headers or cookies reach the client.
    """

    def __init__(self, checker: ImageChecker, url: str, max_bytes: int) -> None:
        super().__init__(status_code=200)
        self._checker = checker
        self._url = url
        self._max_bytes = max_bytes
        self.background: BackgroundTask | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False
        try:
            async with _upstream(self._checker, self._url) as response:
                _judge_answer(response, self._max_bytes)
                # One byte over the cap is read, so that a body cut there is known as too large.
                raw = cast(AsyncGenerator[bytes, None], response.iter_body(self._max_bytes + 1))
                async with aclosing(raw) as stream:
                    head, more = await _read_head(stream)
                    if len(head) > self._max_bytes:
                        raise _too_large(self._max_bytes)
                    sniffed = _judge_type(head, self._checker.allowed_types, complete=not more)
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [
                                (b"content-type", sniffed.content_type.encode("ascii")),
                                *(
                                    (k.lower().encode(), v.encode())
                                    for k, v in PROXY_HEADERS.items()
                                ),
                            ],
                        }
                    )
                    started = True
                    sent = len(head)
                    await send({"type": "http.response.body", "body": head, "more_body": more})
                    if not more:
                        return
                    async for chunk in stream:
                        if sent + len(chunk) > self._max_bytes:
                            raise _too_large(self._max_bytes)
                        sent += len(chunk)
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            if not started:
                raise
            # The client went away mid-body (uvicorn's ClientDisconnected): nothing to answer.
        except AppError as exc:
            if started:
                # Headers are gone: end without the final chunk, so the client sees a cut.
                logger.warning("original of %s cut off: %s", scope.get("path"), exc.code)
                return
            error = JSONResponse({"detail": exc.detail, "code": exc.code}, exc.status_code)
            await error(scope, receive, send)


async def _read_head(stream: AsyncGenerator[bytes, None]) -> tuple[bytes, bool]:
    """The first `SNIFF_WINDOW` bytes or more (whole chunks), and whether more may follow."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        chunks.append(chunk)
        size += len(chunk)
        if size >= SNIFF_WINDOW:
            return b"".join(chunks), True
    return b"".join(chunks), False
