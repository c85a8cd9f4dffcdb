"""The image URL check: is this URL an image our users may keep, and what is it?

`url_guard` decides which URLs and addresses are acceptable, `fetcher` makes the requests;
this module runs one check under its deadline and reads the image's real format and size
from its first bytes.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from email.message import Message

import httpx
import imagesize
import puremagic

from app.config import Settings
from app.db import utcnow
from app.images.errors import (
    ImageCheckFailed,
    ImageUrlBadStatus,
    ImageUrlNotImage,
    ImageUrlUnreachable,
)
from app.images.fetcher import Fetched, FetchSession, Resolver
from app.images.url_guard import UrlPolicy, normalise_image_url

# How much of a body the check reads: enough for the signature and dimensions of every
# allowed format (a JPEG's frame header follows its metadata), and never more.
SNIFF_WINDOW = 65536
MAX_DIMENSION = 2**31 - 1
SVG = "image/svg+xml"
# Names the signature library uses for the types we configure by their registered names.
_MEDIA_TYPE_ALIASES = {
    "image/x-ms-bmp": "image/bmp",
    "image/x-bmp": "image/bmp",
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
}
# A bitmap's signature is two letters ("BM") that plain text may start with, so a bitmap
# must also declare one of the known DIB header sizes (BITMAPCOREHEADER to BITMAPV5HEADER).
_BMP_DIB_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:\d+-\d+|\*)/(\d+)\s*$", re.IGNORECASE | re.ASCII)


@dataclass(frozen=True)
class CheckedImage:
    """What the check learnt about the URL."""

    url: str
    content_type: str
    size_bytes: int | None
    width: int | None
    height: int | None
    checked_at: datetime


@dataclass(frozen=True)
class SniffedImage:
    """An image format recognised from bytes, with its dimensions when they were readable."""

    content_type: str
    width: int | None
    height: int | None


def _dimension(value: object) -> int | None:
    if isinstance(value, int) and 0 < value <= MAX_DIMENSION:
        return value
    return None


def sniff_image(data: bytes, *, complete: bool) -> SniffedImage | None:
    """The image format `data` starts with (by signature, whatever a header claimed) and its
    width and height, or None when it is no image. `complete` says `data` is the whole file:
    a whole file whose dimensions cannot be read is broken, while a cut one may keep them
    beyond the window (a JPEG with large metadata)."""
    try:
        matches = puremagic.magic_string(data)
    except (puremagic.PureError, ValueError):
        return None
    if not matches:
        return None
    media_type = str(matches[0].mime_type).lower()
    media_type = _MEDIA_TYPE_ALIASES.get(media_type, media_type)
    if media_type in ("application/xml", "text/xml") and b"<svg" in data:
        media_type = SVG
    if not media_type.startswith("image/"):
        return None
    if media_type == "image/bmp" and int.from_bytes(data[14:18], "little") not in (
        _BMP_DIB_HEADER_SIZES
    ):
        return None
    width, height = imagesize.get(io.BytesIO(data))
    width, height = _dimension(width), _dimension(height)
    if width is None or height is None:
        width = height = None
        if complete and media_type != SVG:
            return None
    return SniffedImage(media_type, width, height)


def parse_content_type(header: str | None) -> str | None:
    """The media type of a Content-Type header, lower-cased, without parameters."""
    if not header:
        return None
    message = Message()
    message["content-type"] = header
    media_type = message.get_content_type().lower()
    # email.message falls back to text/plain for anything it cannot parse.
    if media_type == "text/plain" and not header.strip().lower().startswith("text/plain"):
        return None
    return media_type


# Sizes are stored in a signed 64-bit column; a hostile server's larger claim means "unknown".
MAX_SIZE_BYTES = 2**63 - 1


def parse_content_length(header: str | None) -> int | None:
    """A declared size in bytes, or None when absent, malformed or absurd."""
    if header is None:
        return None
    value = header.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        return None
    size = int(value)
    return size if size <= MAX_SIZE_BYTES else None


def _total_size(answer: Fetched) -> int | None:
    """The full size of the resource from a ranged GET's answer, when it says."""
    if answer.status_code == 206:
        match = _CONTENT_RANGE.match(answer.headers.get("content-range", ""))
        return parse_content_length(match.group(1)) if match else None
    length = parse_content_length(answer.headers.get("content-length"))
    if length is None and answer.complete:
        return len(answer.body)
    return length


def _bad_status(status_code: int) -> ImageUrlBadStatus:
    return ImageUrlBadStatus(f"The image URL answered HTTP {status_code}; it must answer 2xx.")


class ImageChecker:
    """Checks URLs through the app's shared transport: at most `IMAGE_FETCH_CONCURRENCY`
    checks at once, each under one deadline covering the wait for its turn, DNS, every
    request and hop, and the body."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        settings: Settings,
        resolver: Resolver,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        self._transport = transport
        self._resolver = resolver
        self._policy = UrlPolicy.build(
            settings.image_fetch_allowed_networks, settings.image_fetch_allowed_ports
        )
        self._allowed_types = frozenset(settings.image_allowed_types)
        self._timeout = settings.image_fetch_timeout
        self._max_redirects = settings.image_fetch_max_redirects
        self._sniff = settings.image_sniff
        self._slots = asyncio.Semaphore(settings.image_fetch_concurrency)
        self._on_outcome = on_outcome

    async def check(self, raw_url: str) -> CheckedImage:
        """Accept the URL when it answers 2xx and its first bytes are an image of an
        allowed type (or, with sniffing off, when HEAD claims one).

        Each outcome (`ok` or the error code) is reported to `on_outcome`, for the metrics.
        """
        try:
            checked = await self._check(raw_url)
        except ImageCheckFailed as exc:
            self._report(exc.code)
            raise
        self._report("ok")
        return checked

    @property
    def allowed_types(self) -> frozenset[str]:
        """The image types (`IMAGE_ALLOWED_TYPES`) the server accepts."""
        return self._allowed_types

    @asynccontextmanager
    async def fetch_session(self) -> AsyncIterator[FetchSession]:
        """A session for fetching an image's bytes by the check's rules (every SSRF rule,
        judged addresses, redirects judged again) that holds one of the shared turns, under
        one deadline (`IMAGE_FETCH_TIMEOUT`) covering the wait, every request and the body
        read inside the block. Running out of time raises `ImageUrlUnreachable`."""
        deadline = asyncio.get_running_loop().time() + self._timeout
        try:
            async with asyncio.timeout_at(deadline), self._slots:
                yield FetchSession(
                    transport=self._transport,
                    resolver=self._resolver,
                    policy=self._policy,
                    redirects_left=self._max_redirects,
                    deadline=deadline,
                )
        except TimeoutError as exc:
            raise ImageUrlUnreachable() from exc

    def _report(self, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    async def _check(self, raw_url: str) -> CheckedImage:
        url = normalise_image_url(raw_url)
        deadline = asyncio.get_running_loop().time() + self._timeout
        try:
            async with asyncio.timeout_at(deadline):
                async with self._slots:
                    session = FetchSession(
                        transport=self._transport,
                        resolver=self._resolver,
                        policy=self._policy,
                        redirects_left=self._max_redirects,
                        deadline=deadline,
                    )
                    if self._sniff:
                        return await self._check_bytes(session, url)
                    return await self._check_head(session, url)
        except TimeoutError as exc:
            raise ImageUrlUnreachable() from exc

    async def _check_head(self, session: FetchSession, url: httpx.URL) -> CheckedImage:
        head = await session.request("HEAD", url)
        if not 200 <= head.status_code < 300:
            raise _bad_status(head.status_code)
        content_type = parse_content_type(head.headers.get("content-type"))
        if content_type is None or content_type not in self._allowed_types:
            raise ImageUrlNotImage()
        return CheckedImage(
            url=str(url),
            content_type=content_type,
            size_bytes=parse_content_length(head.headers.get("content-length")),
            width=None,
            height=None,
            checked_at=utcnow(),
        )

    async def _check_bytes(self, session: FetchSession, url: httpx.URL) -> CheckedImage:
        # HEAD first, as the product always has: a missing or failing URL is refused before
        # any body is asked for. A server that refuses HEAD leaves the GET to decide alone.
        head = await session.request("HEAD", url)
        head_size = None
        if head.status_code not in (405, 501):
            if not 200 <= head.status_code < 300:
                raise _bad_status(head.status_code)
            head_size = parse_content_length(head.headers.get("content-length"))
        answer = await session.request(
            "GET",
            head.url,
            headers={"Range": f"bytes=0-{SNIFF_WINDOW - 1}"},
            read_limit=SNIFF_WINDOW,
        )
        if answer.status_code == 416:
            raise ImageUrlNotImage("The image URL holds no data.")
        if not 200 <= answer.status_code < 300:
            raise _bad_status(answer.status_code)
        sniffed = sniff_image(answer.body, complete=answer.complete)
        if sniffed is None or sniffed.content_type not in self._allowed_types:
            raise ImageUrlNotImage()
        size = _total_size(answer)
        return CheckedImage(
            url=str(url),
            content_type=sniffed.content_type,
            size_bytes=size if size is not None else head_size,
            width=sniffed.width,
            height=sniffed.height,
            checked_at=utcnow(),
        )
