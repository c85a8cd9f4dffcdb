"""The check's answers for rechecks: conditional requests (304), a host asking for a pause
(429/503 with Retry-After), validators a hostile host cannot bend, and fingerprints that
tell changed bytes from unchanged ones. Every host is a real server on 127.0.0.1."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.images.checker import (
    MAX_RETRY_AFTER_SECONDS,
    CheckedImage,
    ImageChecker,
    NotModified,
    Validators,
    content_fingerprint,
    parse_retry_after,
    valid_etag,
    valid_last_modified,
)
from app.images.errors import ImageHostBusy, ImageUrlBadStatus
from app.images.fetcher import create_image_transport
from app.images.models import Image
from app.state import app_state
from tests.conftest import make_settings
from tests.support.helpers import assert_error, sign_up
from tests.support.image_host import ImageHost, LoopbackResolver, make_image

PNG = make_image("PNG", (40, 30))
ETAG = '"v1-cat"'
LAST_MODIFIED = "Wed, 02 Dec 2026 08:00:00 GMT"


class ConditionalHost(ImageHost):
    """An image host that honours If-None-Match / If-Modified-Since and Range, with bytes
    and status that a test may change; every request's headers are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.body = PNG
        self.etag: str | None = ETAG
        self.last_modified: str | None = LAST_MODIFIED
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.routes["/cat.png"] = self._serve
        self.routes["/busy.png"] = self._serve

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        headers = {name.lower(): value for name, value in handler.headers.items()}
        self.seen.append((handler.command, headers))
        unchanged = (self.etag is not None and headers.get("if-none-match") == self.etag) or (
            "if-none-match" not in headers
            and self.last_modified is not None
            and headers.get("if-modified-since") == self.last_modified
        )
        validators = {"ETag": self.etag, "Last-Modified": self.last_modified}
        if unchanged:
            handler.send_response(304)
            for name, value in validators.items():
                if value is not None:
                    handler.send_header(name, value)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        body, status = self.body, 200
        match = re.fullmatch(r"bytes=0-(\d+)", headers.get("range", ""))
        if match:
            body, status = self.body[: int(match.group(1)) + 1], 206
        handler.send_response(status)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Length", str(len(body)))
        if status == 206:
            handler.send_header("Content-Range", f"bytes 0-{len(body) - 1}/{len(self.body)}")
        for name, value in validators.items():
            if value is not None:
                handler.send_header(name, value)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    def methods(self) -> list[str]:
        return [method for method, _ in self.seen]


@pytest.fixture(scope="module")
def conditional_host() -> Iterator[ConditionalHost]:
    host = ConditionalHost()
    host.start()
    yield host
    host.stop()


@pytest.fixture
def host(conditional_host: ConditionalHost) -> ConditionalHost:
    conditional_host.forget()
    conditional_host.seen.clear()
    conditional_host.body = PNG
    conditional_host.etag = ETAG
    conditional_host.last_modified = LAST_MODIFIED
    return conditional_host


@pytest.fixture
async def checker() -> AsyncIterator[ImageChecker]:
    settings = make_settings("sqlite+aiosqlite://")
    transport = create_image_transport(settings)
    try:
        yield ImageChecker(transport, settings, LoopbackResolver())
    finally:
        await transport.aclose()


def _answer(status: int, headers: dict[str, str], head_ok: bool = False) -> Any:
    """A route answering `status` with `headers` (HEAD answers 200 first when `head_ok`)."""

    def handle(handler: BaseHTTPRequestHandler) -> None:
        if head_ok and handler.command == "HEAD":
            handler.send_response(200)
            handler.send_header("Content-Type", "image/png")
            handler.send_header("Content-Length", str(len(PNG)))
            handler.end_headers()
            return
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", "4")
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(b"busy")

    return handle


# Conditional requests


async def test_a_check_returns_the_hosts_validators_and_a_fingerprint(
    checker: ImageChecker, host: ConditionalHost
) -> None:
    checked = await checker.check(host.url("/cat.png"))
    assert isinstance(checked, CheckedImage)
    assert (checked.content_type, checked.width, checked.height) == ("image/png", 40, 30)
    assert (checked.etag, checked.last_modified) == (ETAG, LAST_MODIFIED)
    assert checked.fingerprint == content_fingerprint(PNG, len(PNG))
    # Without validators nothing conditional is sent.
    assert all("if-none-match" not in headers for _, headers in host.seen)


async def test_unchanged_image_costs_one_head_answered_304(
    checker: ImageChecker, host: ConditionalHost
) -> None:
    result = await checker.check(
        host.url("/cat.png"), validators=Validators(etag=ETAG, last_modified=LAST_MODIFIED)
    )
    assert isinstance(result, NotModified)
    assert result.url == host.url("/cat.png")
    assert host.methods() == ["HEAD"]  # no body was asked for
    _, headers = host.seen[0]
    assert headers["if-none-match"] == ETAG
    assert headers["if-modified-since"] == LAST_MODIFIED


async def test_last_modified_alone_makes_the_request_conditional(
    checker: ImageChecker, host: ConditionalHost
) -> None:
    result = await checker.check(
        host.url("/cat.png"), validators=Validators(etag=None, last_modified=LAST_MODIFIED)
    )
    assert isinstance(result, NotModified)
    assert "if-none-match" not in host.seen[0][1]


async def test_changed_image_is_checked_again_with_a_new_fingerprint(
    checker: ImageChecker, host: ConditionalHost
) -> None:
    first = await checker.check(host.url("/cat.png"))
    host.body = make_image("PNG", (41, 30))
    host.etag = '"v2-cat"'
    second = await checker.check(
        host.url("/cat.png"), validators=Validators(first.etag, first.last_modified)
    )
    assert isinstance(second, CheckedImage)
    assert (second.width, second.height, second.etag) == (41, 30, '"v2-cat"')
    assert second.fingerprint != first.fingerprint
    assert host.methods() == ["HEAD", "GET", "HEAD", "GET"]


async def test_host_ignoring_conditions_still_yields_a_full_check(
    checker: ImageChecker, image_host: ImageHost
) -> None:
    result = await checker.check(
        image_host.url("/cat.png"), validators=Validators(etag=ETAG, last_modified=None)
    )
    assert isinstance(result, CheckedImage)
    png = image_host.png_bytes
    assert result.fingerprint == content_fingerprint(png, len(png))


async def test_304_to_an_unconditional_request_is_a_bad_status(
    checker: ImageChecker, image_host: ImageHost
) -> None:
    image_host.routes["/odd-304.png"] = _answer(304, {})
    with pytest.raises(ImageUrlBadStatus):
        await checker.check(image_host.url("/odd-304.png"))


# Fingerprints


def test_fingerprints_are_equal_for_the_same_bytes_and_size() -> None:
    assert content_fingerprint(PNG, len(PNG)) == content_fingerprint(bytes(PNG), len(PNG))
    assert len(content_fingerprint(PNG, None)) == 32


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (PNG[:-1] + bytes([PNG[-1] ^ 1]), len(PNG)),  # one bit changed
        (PNG, len(PNG) + 1),  # same window, the rest of the file grew
        (PNG, None),  # size no longer known
        (PNG[:-1], len(PNG)),  # fewer bytes read
    ],
)
def test_fingerprints_differ_when_bytes_or_size_change(data: bytes, size: int | None) -> None:
    assert content_fingerprint(data, size) != content_fingerprint(PNG, len(PNG))


async def test_same_image_at_two_urls_has_the_same_fingerprint(
    checker: ImageChecker, image_host: ImageHost
) -> None:
    image_host.add("/copy.png", 200, image_host.png_bytes, {"Content-Type": "image/png"})
    first = await checker.check(image_host.url("/cat.png"))
    second = await checker.check(image_host.url("/copy.png"))
    assert first.fingerprint is not None
    assert first.fingerprint == second.fingerprint


# A host asking for a pause


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("head_ok", [False, True], ids=["on-head", "on-get"])
async def test_busy_host_with_retry_after_seconds_raises_host_busy(
    checker: ImageChecker, image_host: ImageHost, status: int, head_ok: bool
) -> None:
    image_host.routes["/busy.png"] = _answer(status, {"Retry-After": "120"}, head_ok)
    with pytest.raises(ImageHostBusy) as caught:
        await checker.check(image_host.url("/busy.png"))
    assert caught.value.retry_after_seconds == 120
    assert caught.value.code == "image_host_busy"


async def test_retry_after_as_an_http_date_counts_from_now(
    checker: ImageChecker, image_host: ImageHost
) -> None:
    when = datetime.now(UTC) + timedelta(seconds=600)
    image_host.routes["/busy.png"] = _answer(429, {"Retry-After": format_datetime(when, True)})
    with pytest.raises(ImageHostBusy) as caught:
        await checker.check(image_host.url("/busy.png"))
    assert 590 <= caught.value.retry_after_seconds <= 600


@pytest.mark.parametrize("retry_after", [None, "soon", "-5", "1.5"])
async def test_busy_status_without_a_readable_retry_after_is_a_failure(
    checker: ImageChecker, image_host: ImageHost, retry_after: str | None
) -> None:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    image_host.routes["/busy.png"] = _answer(503, headers)
    with pytest.raises(ImageUrlBadStatus):
        await checker.check(image_host.url("/busy.png"))


async def test_retry_after_on_other_statuses_is_a_failure(
    checker: ImageChecker, image_host: ImageHost
) -> None:
    image_host.routes["/busy.png"] = _answer(500, {"Retry-After": "60"})
    with pytest.raises(ImageUrlBadStatus):
        await checker.check(image_host.url("/busy.png"))


NOW = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("0", 0.0),
        (" 30 ", 30.0),
        ("86400", 86400.0),
        ("86401", MAX_RETRY_AFTER_SECONDS),  # capped
        ("9" * 400, MAX_RETRY_AFTER_SECONDS),  # absurd, capped without parsing a huge number
        ("Wed, 02 Dec 2026 10:01:00 GMT", 60.0),
        ("Wed, 02 Dec 2026 09:00:00 GMT", 0.0),  # already past
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER_SECONDS),
        (None, None),
        ("", None),
        ("tomorrow", None),
        ("-1", None),
        ("2.5", None),
        ("\u0661\u0662", None),  # Arabic-Indic digits are digits to Python, not to HTTP
    ],
)
def test_retry_after_forms(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


# Validators from a hostile host


@pytest.mark.parametrize(
    "etag",
    [
        '"a"\r\nX-Injected: 1',
        '"' + "a" * 300 + '"',
        "unquoted",
        '"has space"',
        '"caf\u00e9"',
    ],
)
def test_malformed_etags_are_not_kept(etag: str) -> None:
    assert valid_etag(etag) is None
    assert Validators(etag=etag, last_modified=None).headers() == {}


@pytest.mark.parametrize("etag", ['"abc"', 'W/"abc"', '""'])
def test_well_formed_etags_are_kept(etag: str) -> None:
    assert valid_etag(etag) == etag


@pytest.mark.parametrize(
    "value", ["yesterday", "Wed, 02 Dec 2026 08:00:00 GMT\r\nX: 1", "x" * 100, ""]
)
def test_malformed_last_modified_is_not_kept(value: str) -> None:
    assert valid_last_modified(value) is None
    assert Validators(etag=None, last_modified=value).headers() == {}


async def test_hostile_validators_are_not_returned_by_a_check(
    checker: ImageChecker, image_host: ImageHost
) -> None:
    image_host.add(
        "/odd-validators.png",
        200,
        image_host.png_bytes,
        {"Content-Type": "image/png", "ETag": '"' + "x" * 400 + '"', "Last-Modified": "never"},
    )
    checked = await checker.check(image_host.url("/odd-validators.png"))
    assert (checked.etag, checked.last_modified) == (None, None)


# Through the API


async def test_create_against_a_busy_host_is_503_with_retry_after_and_stores_nothing(
    app: Any, client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    image_host.routes["/busy.png"] = _answer(429, {"Retry-After": "30"})
    owner = await sign_up(client, "busyowner")
    response = await client.post(
        f"/users/{owner.id}/images",
        json={"image_url": image_host.url("/busy.png")},
        headers=owner.headers,
    )
    assert_error(response, 503, "image_host_busy")
    assert response.headers["retry-after"] == "30"
    async with app_state(app).sessionmaker() as session:
        count = (await session.execute(select(func.count()).select_from(Image))).scalar_one()
    assert count == 0


async def test_image_host_busy_is_documented_on_the_image_routes(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    create = schema["paths"]["/users/{user_id}/images"]["post"]["responses"]
    assert "image_host_busy" in create["503"]["description"]
    assert "database_unavailable" in create["503"]["description"]  # still listed too
