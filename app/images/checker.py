"""The image URL check: is this URL an image our users may keep?"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from email.message import Message

import httpx

from app.config import Settings
from app.errors import InvalidInput
from app.images.schemas import MAX_URL_LENGTH


class ImageCheckFailed(InvalidInput):
    """The URL is not an image we can keep; `code` says why."""

    code = "image_url_invalid"


class ImageUrlInvalid(ImageCheckFailed):
    code = "image_url_invalid"
    detail = "The image URL must be an absolute http or https URL with a host name."


class ImageUrlUnreachable(ImageCheckFailed):
    code = "image_url_unreachable"
    detail = "The image URL could not be reached in time; check the address and try again."


class ImageUrlBadStatus(ImageCheckFailed):
    code = "image_url_bad_status"
    detail = "The image URL did not answer with success."


class ImageUrlNotImage(ImageCheckFailed):
    code = "image_url_not_image"
    detail = "The URL does not point to an image of an allowed type."


IMAGE_CHECK_ERRORS: tuple[type[ImageCheckFailed], ...] = (
    ImageUrlInvalid,
    ImageUrlUnreachable,
    ImageUrlBadStatus,
    ImageUrlNotImage,
)


@dataclass(frozen=True)
class CheckedImage:
    """What the check learnt about the URL."""

    url: str
    content_type: str
    size_bytes: int | None


def normalise_image_url(raw: str) -> httpx.URL:
    """Parse and normalise a user's URL (IDNA host, default port dropped), or refuse it."""
    if len(raw) > MAX_URL_LENGTH:
        raise ImageUrlInvalid(f"The image URL is longer than {MAX_URL_LENGTH} characters.")
    try:
        url = httpx.URL(raw.strip())
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise ImageUrlInvalid() from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ImageUrlInvalid()
    if url.userinfo:
        raise ImageUrlInvalid("The image URL must not contain a user name or password.")
    url = url.copy_with(fragment=None)
    if len(str(url)) > MAX_URL_LENGTH:
        raise ImageUrlInvalid(f"The image URL is longer than {MAX_URL_LENGTH} characters.")
    return url


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


def parse_content_length(header: str | None) -> int | None:
    if header is None or not header.strip().isdigit():
        return None
    return int(header.strip())


class ImageChecker:
    """Checks URLs with a HEAD request through the app's shared HTTP client."""

    def __init__(self, client: httpx.AsyncClient, settings: Settings) -> None:
        self._client = client
        self._allowed_types = frozenset(settings.image_allowed_types)
        self._timeout = settings.image_fetch_timeout

    async def check(self, raw_url: str) -> CheckedImage:
        """Accept the URL when it answers 2xx with an allowed image Content-Type."""
        url = normalise_image_url(raw_url)
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client.head(url, follow_redirects=True)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            # Only a redirect can get here (the URL itself was checked above): one to
            # `file:`, `ftp:`, `javascript:` or `data:` is the URL's fault, not the network's.
            raise ImageUrlInvalid(
                "The image URL redirects to an address that is not an http or https URL."
            ) from exc
        except (TimeoutError, httpx.TransportError, httpx.TooManyRedirects) as exc:
            raise ImageUrlUnreachable() from exc
        if not response.is_success:
            raise ImageUrlBadStatus(
                f"The image URL answered HTTP {response.status_code}; it must answer 2xx."
            )
        content_type = parse_content_type(response.headers.get("content-type"))
        if content_type is None or content_type not in self._allowed_types:
            raise ImageUrlNotImage()
        return CheckedImage(
            url=str(url),
            content_type=content_type,
            size_bytes=parse_content_length(response.headers.get("content-length")),
        )
