"""TLS through a pinned connection: the check connects to the address it judged, yet the
certificate is verified for the URL's host name, which is also sent as SNI and Host."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest
import trustme

from app.images.checker import ImageChecker
from app.images.errors import ImageUrlUnreachable
from app.images.fetcher import create_image_transport
from tests.conftest import make_settings
from tests.support.image_host import ImageHost

NAME = "images.test"


class _FixedResolver:
    """Every name this test uses resolves to the TLS host on 127.0.0.1."""

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        return ["127.0.0.1"]


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_host(authority: trustme.CA) -> Iterator[ImageHost]:
    """An image host on 127.0.0.1 whose certificate is valid for images.test only."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(NAME).configure_cert(context)
    host = ImageHost("127.0.0.1", tls=context)
    host.start()
    yield host
    host.stop()


@pytest.fixture
async def checker(authority: trustme.CA) -> AsyncIterator[ImageChecker]:
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    settings = make_settings("sqlite+aiosqlite://")
    transport = create_image_transport(settings, verify=trusting)
    try:
        yield ImageChecker(transport, settings, _FixedResolver())
    finally:
        await transport.aclose()


async def test_certificate_is_verified_for_the_url_host_name(
    checker: ImageChecker, tls_host: ImageHost
) -> None:
    tls_host.forget()
    tls_host.server_names.clear()
    checked = await checker.check(f"https://{NAME}:{tls_host.port}/cat.png")
    assert (checked.content_type, checked.width, checked.height) == ("image/png", 3, 2)
    assert tls_host.requests == [("HEAD", "/cat.png"), ("GET", "/cat.png")]
    assert tls_host.host_headers == [f"{NAME}:{tls_host.port}"] * 2
    assert tls_host.server_names == [NAME, NAME]


async def test_certificate_for_another_name_is_refused(
    checker: ImageChecker, tls_host: ImageHost
) -> None:
    # Same address, but the certificate is not valid for this name: the TLS handshake
    # fails before any request is sent.
    tls_host.forget()
    with pytest.raises(ImageUrlUnreachable) as refused:
        await checker.check(f"https://other.test:{tls_host.port}/cat.png")
    assert "certificate verify failed" in str(refused.value.__cause__).lower()
    assert tls_host.requests == []
