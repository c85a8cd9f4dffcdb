"""The image URL check: is this URL an image our users may keep, and what is it?

`url_guard` decides which URLs and addresses are acceptable, `fetcher` makes the requests;
this module runs one check under its deadline and reads the image's real format and size
from its first bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import overload

import httpx
import imagesize
import puremagic

from app.config import Settings
from app.db import utcnow
from app.images.errors import (
    ImageCheckFailed,
    ImageHostBusy,
    ImageUrlBadStatus,
    ImageUrlNotImage,
    ImageUrlUnreachable,
)
from app.images.fetcher import Fetched, FetchSession, ImageTransport, Resolver
from app.images.url_guard import NormalisedUrl, UrlPolicy, normalise_image_url

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
# RFC 9110 entity-tag, visible ASCII only: a validator is sent back to the host on the next
# check, so nothing that could bend a header line is kept. Sizes fit the stored columns.
_ENTITY_TAG = re.compile(r'^(?:W/)?"[\x21\x23-\x7e]*"$', re.ASCII)
_HEADER_TEXT = re.compile(r"^[\x20-\x7e]+$", re.ASCII)  # printable ASCII, no line breaks
MAX_ETAG_LENGTH = 256
MAX_LAST_MODIFIED_LENGTH = 64
# A host may ask for a pause (429/503 with Retry-After); a wish beyond a day is capped, so a
# hostile or broken host cannot take its images off the schedule for good.
MAX_RETRY_AFTER_SECONDS = 86400.0
BUSY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class CheckedImage:
    """What the check learnt about the URL.

    `etag` and `last_modified` are the host's validators for the next check's conditional
    request; `fingerprint` is a hash of the bytes read and the total size, which tells new
    content from old (None when no bytes were read: sniffing off).
    """

    url: str
    content_type: str
    size_bytes: int | None
    width: int | None
    height: int | None
    checked_at: datetime
    etag: str | None = None
    last_modified: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class Validators:
    """What the host said identifies the bytes it served last time; sent back as
    If-None-Match / If-Modified-Since, so that unchanged bytes cost a 304."""

    etag: str | None
    last_modified: str | None

    def headers(self) -> dict[str, str]:
        """The conditional request headers; a validator that is not well formed is left
        out (a stored value is sent back to a host, so it is judged again here)."""
        headers: dict[str, str] = {}
        etag = valid_etag(self.etag)
        if etag is not None:
            headers["If-None-Match"] = etag
        last_modified = valid_last_modified(self.last_modified)
        if last_modified is not None:
            headers["If-Modified-Since"] = last_modified
        return headers


@dataclass(frozen=True)
class NotModified:
    """The URL answered 304 to a conditional request: the image is as the last check found."""

    url: str
    checked_at: datetime


def valid_etag(value: str | None) -> str | None:
    """An ETag header worth keeping, or None."""
    if value is None:
        return None
    value = value.strip()
    if len(value) > MAX_ETAG_LENGTH or not _ENTITY_TAG.match(value):
        return None
    return value


def _http_date(value: str) -> datetime | None:
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # HTTP dates are always GMT; the parser leaves "-0000" naive.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def valid_last_modified(value: str | None) -> str | None:
    """A Last-Modified header worth keeping (an HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    if len(value) > MAX_LAST_MODIFIED_LENGTH or not _HEADER_TEXT.match(value):
        return None
    return value if _http_date(value) is not None else None


def parse_retry_after(header: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), within
    0 and `MAX_RETRY_AFTER_SECONDS`; None when absent or unreadable."""
    if header is None:
        return None
    value = header.strip()
    if value.isascii() and value.isdigit():
        if len(value) > 9:  # more than 30 years: capped without reading it as a number
            return MAX_RETRY_AFTER_SECONDS
        return min(float(int(value)), MAX_RETRY_AFTER_SECONDS)
    if len(value) > MAX_LAST_MODIFIED_LENGTH or not _HEADER_TEXT.match(value):
        return None
    moment = _http_date(value)
    if moment is None:
        return None
    return min(max((moment - now).total_seconds(), 0.0), MAX_RETRY_AFTER_SECONDS)


def content_fingerprint(data: bytes, total_size: int | None) -> str:
    """A stable hash of the bytes read and the total size: equal for the same image, and
    different when the bytes in the window or the size change."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(b"size=%d;" % total_size if total_size is not None else b"size=?;")
    digest.update(data)
    return digest.hexdigest()


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


def _common_signature(data: bytes) -> str | None:
    """The media type of the formats galleries hold nearly always, from their signatures
    at the start of the file: the signature library's answer for them, in a few comparisons
    instead of its scan of every signature it knows (most of a check's CPU, before). It
    differs where the library lets a signature elsewhere in the file outweigh the format's
    own: an AVIF whose `ftyp` box is 28 bytes long is AVIF here (the library takes the box's
    size prefix for an MP4 video's), a bitmap is a bitmap whatever its byte 20 onwards
    spell. None for anything else, which the library then judges."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff") and head[3:4] != b"\xf7":  # not JPEG-LS
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:12] in (b"ftypavif", b"ftypavis"):
        return "image/avif"
    if head.startswith(b"BM"):
        return "image/bmp"
    return None


def _library_signature(data: bytes) -> str | None:
    try:
        matches = puremagic.magic_string(data)
    except (puremagic.PureError, ValueError):
        return None
    if not matches:
        return None
    media_type = str(matches[0].mime_type).lower()
    return _MEDIA_TYPE_ALIASES.get(media_type, media_type)


def sniff_image(data: bytes, *, complete: bool) -> SniffedImage | None:
    """The image format `data` starts with (by signature, whatever a header claimed) and its
    width and height, or None when it is no image. `complete` says `data` is the whole file:
    a whole file whose dimensions cannot be read is broken, while a cut one may keep them
    beyond the window (a JPEG with large metadata)."""
    media_type = _common_signature(data) or _library_signature(data)
    if media_type is None:
        return None
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


def _raise_if_busy(answer: Fetched) -> None:
    """ImageHostBusy when the host asks for a pause: 429 or 503 with a Retry-After."""
    if answer.status_code in BUSY_STATUSES:
        seconds = parse_retry_after(answer.headers.get("retry-after"), utcnow())
        if seconds is not None:
            raise ImageHostBusy(seconds)


def _bad_status(status_code: int) -> ImageUrlBadStatus:
    return ImageUrlBadStatus(f"The image URL answered HTTP {status_code}; it must answer 2xx.")


class ImageChecker:
    """Checks URLs through the app's shared transport: at most `IMAGE_FETCH_CONCURRENCY`
    checks at once, each under one deadline covering the wait for its turn, DNS, every
    request and hop, and the body."""

    def __init__(
        self,
        transport: ImageTransport,
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

    @overload
    async def check(self, url: NormalisedUrl | str, *, validators: None = None) -> CheckedImage: ...

    @overload
    async def check(
        self, url: NormalisedUrl | str, *, validators: Validators
    ) -> CheckedImage | NotModified: ...

    async def check(
        self, url: NormalisedUrl | str, *, validators: Validators | None = None
    ) -> CheckedImage | NotModified:
        """Accept the URL when it answers 2xx and its first bytes are an image of an
        allowed type (or, with sniffing off, when HEAD claims one).

        `url` is normalised already (`normalise_image_url`), or a string that is normalised
        here (a stored URL may predate today's rules). With `validators` the requests are
        conditional, and a 304 answers `NotModified`. A host answering 429 or 503 with
        Retry-After raises `ImageHostBusy`. Each outcome (`ok`, `not_modified` or the error
        code) is reported to `on_outcome`, for the metrics.
        """
        try:
            target = url if isinstance(url, httpx.URL) else normalise_image_url(url)
            checked = await self._check(target, validators)
        except ImageCheckFailed as exc:
            self._report(exc.code)
            raise
        self._report("ok" if isinstance(checked, CheckedImage) else "not_modified")
        return checked

    def _report(self, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    async def _check(
        self, url: NormalisedUrl, validators: Validators | None
    ) -> CheckedImage | NotModified:
        conditional = validators.headers() if validators is not None else {}
        async with self.fetch_session() as session:
            if self._sniff:
                return await self._check_bytes(session, url, conditional)
            return await self._check_head(session, url, conditional)

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
            async with (
                asyncio.timeout_at(deadline),
                self._slots,
                FetchSession(
                    transport=self._transport,
                    resolver=self._resolver,
                    policy=self._policy,
                    redirects_left=self._max_redirects,
                    deadline=deadline,
                    deadline_enforced=True,
                ) as session,
            ):
                yield session
        except TimeoutError as exc:
            raise ImageUrlUnreachable() from exc

    async def _check_head(
        self, session: FetchSession, url: NormalisedUrl, conditional: dict[str, str]
    ) -> CheckedImage | NotModified:
        head = await session.request("HEAD", url, headers=conditional)
        if conditional and head.status_code == 304:
            return NotModified(url=str(url), checked_at=utcnow())
        _raise_if_busy(head)
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
            etag=valid_etag(head.headers.get("etag")),
            last_modified=valid_last_modified(head.headers.get("last-modified")),
        )

    async def _check_bytes(
        self, session: FetchSession, url: NormalisedUrl, conditional: dict[str, str]
    ) -> CheckedImage | NotModified:
        # HEAD first, as the product always has: a missing or failing URL is refused before
        # any body is asked for, and an unchanged one costs a 304 and no body at all. A
        # server that refuses HEAD leaves the GET to decide alone.
        head = await session.request("HEAD", url, headers=conditional)
        if conditional and head.status_code == 304:
            return NotModified(url=str(url), checked_at=utcnow())
        _raise_if_busy(head)
        head_size = None
        if head.status_code not in (405, 501):
            if not 200 <= head.status_code < 300:
                raise _bad_status(head.status_code)
            head_size = parse_content_length(head.headers.get("content-length"))
        answer = await session.request(
            "GET",
            head.url,
            headers={"Range": f"bytes=0-{SNIFF_WINDOW - 1}", **conditional},
            read_limit=SNIFF_WINDOW,
        )
        if conditional and answer.status_code == 304:
            return NotModified(url=str(url), checked_at=utcnow())
        _raise_if_busy(answer)
        if answer.status_code == 416:
            raise ImageUrlNotImage("The image URL holds no data.")
        if not 200 <= answer.status_code < 300:
            raise _bad_status(answer.status_code)
        sniffed = sniff_image(answer.body, complete=answer.complete)
        if sniffed is None or sniffed.content_type not in self._allowed_types:
            raise ImageUrlNotImage()
        size = _total_size(answer)
        if size is None:
            size = head_size
        return CheckedImage(
            url=str(url),
            content_type=sniffed.content_type,
            size_bytes=size,
            width=sniffed.width,
            height=sniffed.height,
            checked_at=utcnow(),
            etag=valid_etag(answer.headers.get("etag") or head.headers.get("etag")),
            last_modified=valid_last_modified(
                answer.headers.get("last-modified") or head.headers.get("last-modified")
            ),
            fingerprint=content_fingerprint(answer.body, size),
        )
