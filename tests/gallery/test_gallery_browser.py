"""The gallery page in a real browser: Debian's Chromium driven by Playwright against
`gallery serve`, with images on a loopback image host.

Opens /u/alice, checks that every thumbnail loaded (a decoded image, at most 256 pixels on
its longest side), that the private image is nowhere, that no request left the app's origin
and no CSP rule was broken, follows "Older", and saves the screenshot the README shows
(docs/images/gallery.png).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image as PILImage
from PIL import ImageDraw

from tests.support.helpers import PASSWORD
from tests.support.image_host import ImageHost
from tests.support.live_server import ROOT, LiveServer, live_server
from tests.test_browser import CHROMIUM, CHROMIUM_FLAGS, BrowserSession

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOT = ROOT / "docs" / "images" / "gallery.png"

# (path, title, size, colours): landscape and portrait originals larger than a thumbnail.
PICTURES = [
    ("/harbour.jpg", "Harbour at dawn", (1200, 800), ((255, 170, 90), (40, 70, 140))),
    ("/fern.png", "Fern, close up", (700, 1000), ((30, 110, 60), (190, 230, 140))),
    ("/dunes.jpg", "Dunes", (1600, 900), ((240, 200, 120), (170, 90, 40))),
    ("/night.webp", "Night train", (900, 900), ((10, 10, 40), (120, 60, 170))),
    ("/kite.gif", "Red kite", (800, 600), ((200, 40, 40), (250, 230, 200))),
]
PRIVATE_TITLE = "Diary page, private"


def _picture(size: tuple[int, int], colours: tuple[Any, Any], fmt: str) -> bytes:
    """A gradient with a few shapes: something a person can tell apart in a thumbnail."""
    width, height = size
    image = PILImage.new("RGB", size)
    draw = ImageDraw.Draw(image)
    (r1, g1, b1), (r2, g2, b2) = colours
    for y in range(height):
        t = y / max(1, height - 1)
        colour = (int(r1 + (r2 - r1) * t), int(g1 + (g2 - g1) * t), int(b1 + (b2 - b1) * t))
        draw.line([(0, y), (width, y)], fill=colour)
    draw.ellipse(
        [width * 0.55, height * 0.15, width * 0.8, height * 0.15 + width * 0.25],
        fill=(255, 245, 220),
    )
    draw.polygon(
        [(0, height), (width * 0.35, height * 0.55), (width * 0.7, height)], fill=colours[1]
    )
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def pictures() -> Iterator[ImageHost]:
    host = ImageHost()
    formats = {"jpg": ("JPEG", "image/jpeg"), "png": ("PNG", "image/png")}
    formats |= {"webp": ("WEBP", "image/webp"), "gif": ("GIF", "image/gif")}
    for path, _, size, colours in PICTURES:
        fmt, content_type = formats[path.rsplit(".", 1)[1]]
        host.add(path, 200, _picture(size, colours, fmt), {"Content-Type": content_type})
    host.add(
        "/diary.png",
        200,
        _picture((640, 480), ((90, 90, 90), (20, 20, 20)), "PNG"),
        {"Content-Type": "image/png"},
    )
    host.start()
    yield host
    host.stop()


@pytest.fixture
def server(tmp_path: Path, pictures: ImageHost) -> Iterator[LiveServer]:
    # The loopback image host is the one address exempt from the SSRF guard.
    with live_server(tmp_path, IMAGE_FETCH_ALLOWED_NETWORKS="127.0.0.1/32") as running:
        body = {
            "username": "alice",
            "email": "alice@example.com",
            "password": PASSWORD,
            "password_confirm": PASSWORD,
        }
        assert httpx.post(f"{running.url}/accounts/register", json=body).status_code == 201
        login = {"login": "alice", "password": PASSWORD}
        token = httpx.post(f"{running.url}/accounts/login", json=login).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        images = [
            {
                "image_url": pictures.url("/diary.png"),
                "title": PRIVATE_TITLE,
                "visibility": "private",
            }
        ]
        images += [
            {"image_url": pictures.url(path), "title": title} for path, title, *_ in PICTURES
        ]
        for image in images:
            response = httpx.post(
                f"{running.url}/users/1/images", json=image, headers=headers, timeout=30
            )
            assert response.status_code == 201, response.text
        yield running


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserSession]:
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1100, "height": 760},
        )
        try:
            yield BrowserSession(context)
        finally:
            context.close()


_THUMBNAILS = """images => images.map(image => ({
    alt: image.alt,
    src: image.getAttribute('src'),
    complete: image.complete,
    width: image.naturalWidth,
    height: image.naturalHeight,
}))"""


def test_gallery_page_shows_every_thumbnail_in_chromium(
    server: LiveServer, browser: BrowserSession
) -> None:
    page = browser.page
    response = page.goto(f"{server.url}/u/alice", wait_until="load")
    assert response is not None
    assert response.status == 200
    thumbnails = page.eval_on_selector_all("ul.grid img", _THUMBNAILS)
    assert [t["alt"] for t in thumbnails] == [title for _, title, *_ in reversed(PICTURES)]
    for thumbnail in thumbnails:
        assert thumbnail["complete"], thumbnail
        assert thumbnail["width"] > 0, thumbnail  # decoded: the thumbnail really loaded
        assert max(thumbnail["width"], thumbnail["height"]) <= 256, thumbnail
        assert thumbnail["src"].endswith("/thumbnail?size=256")
    # Landscape stays landscape, portrait stays portrait.
    by_title = {t["alt"]: t for t in thumbnails}
    assert by_title["Dunes"]["width"] > by_title["Dunes"]["height"]
    assert by_title["Fern, close up"]["width"] < by_title["Fern, close up"]["height"]
    assert PRIVATE_TITLE not in page.content()
    assert page.title() == "alice\u2019s gallery \u00b7 Gallery"

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1100, "height": 400})
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000

    thumbnail_requests = [url for url in browser.requested if "/thumbnail?" in url]
    assert len(thumbnail_requests) == len(PICTURES)
    assert not browser.off_origin(server.url), browser.off_origin(server.url)
    violations = [m for m in browser.console if "Content Security Policy" in m]
    assert not violations, violations


def test_older_link_pages_on_in_chromium(
    server: LiveServer, browser: BrowserSession, pictures: ImageHost
) -> None:
    # A page holds 24 images; 20 more public ones make a second page of 1.
    token = httpx.post(
        f"{server.url}/accounts/login", json={"login": "alice", "password": PASSWORD}
    ).json()["access_token"]
    for n in range(20):
        response = httpx.post(
            f"{server.url}/users/1/images",
            json={"image_url": pictures.url(f"/harbour.jpg?copy={n}"), "title": f"Copy {n}"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
    page = browser.page
    page.goto(f"{server.url}/u/alice", wait_until="load")
    assert page.locator("ul.grid img").count() == 24
    page.click("text=Older")
    page.wait_for_load_state("load")
    thumbnails = page.eval_on_selector_all("ul.grid img", _THUMBNAILS)
    assert [t["alt"] for t in thumbnails] == ["Harbour at dawn"]
    assert all(t["width"] > 0 for t in thumbnails)
    page.click("text=Newest")
    page.wait_for_load_state("load")
    assert page.locator("ul.grid img").count() == 24
    assert not browser.off_origin(server.url), browser.off_origin(server.url)
