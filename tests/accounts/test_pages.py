"""The pages for mailed links over HTTP: served at the paths the mails use, under a strict
CSP, never cached, with no inline script or style and nothing from another origin; a GET (a
mail scanner's prefetch) spends no token. The browser side is tests/test_journeys_browser.py."""

from __future__ import annotations

import tomllib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

import app.accounts
from app.accounts.pages import PAGES_CSP
from tests.conftest import mail_settings
from tests.support.helpers import ISSUED_TOKENS, PASSWORD, assert_error, register
from tests.support.mail_server import MailServer

PAGES = ["/reset-password", "/verify-registration", "/verify-email"]


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline_script = False
        self.urls: list[str] = []
        self.style_attributes: list[str] = []
        self.tags: list[str] = []
        self.handlers: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if tag == "script":
            self.scripts.append(values)
            self._in_script = True
        self.urls.extend(value for name, value in attrs if name in ("src", "href") and value)
        self.style_attributes.extend(value or "" for name, value in attrs if name == "style")
        self.handlers.extend(name for name, _ in attrs if name.startswith("on"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_script = True


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


@pytest.mark.parametrize("path", PAGES)
async def test_pages_are_served_under_a_strict_policy(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, params={"token": "whatever-token"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == PAGES_CSP
    assert "script-src 'self';" in PAGES_CSP
    assert "'unsafe-inline'" not in PAGES_CSP
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    page = _parse(response.text)
    # Scripts only from files we serve; no inline script, style or handler; no other origin.
    assert page.scripts == [{"src": "/pages/assets/pages.js", "defer": None}]
    assert not page.inline_script
    assert "style" not in page.tags
    assert page.style_attributes == []
    assert page.handlers == []
    assert page.urls
    assert all(url.startswith("/pages/assets/") for url in page.urls), page.urls
    # The server never reads the token: the page is the same with or without it.
    assert "whatever-token" not in response.text
    assert (await client.get(path)).text == response.text


async def test_page_assets_are_an_allow_list(client: httpx.AsyncClient) -> None:
    script = await client.get("/pages/assets/pages.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "history.replaceState" in script.text
    style = await client.get("/pages/assets/pages.css")
    assert style.status_code == 200
    assert style.headers["content-type"].startswith("text/css")
    for name in ("pages.py", "..%2Fpages.py", "..%2F..%2Fconfig.py", "swagger-init.js"):
        assert_error(await client.get(f"/pages/assets/{name}"), 404, "not_found")


@pytest.mark.parametrize("path", PAGES)
async def test_a_page_cannot_be_posted_to(client: httpx.AsyncClient, path: str) -> None:
    """Should the script not run, a form sent natively finds nothing that takes it."""
    response = await client.post(path, data={"password": PASSWORD})
    assert_error(response, 405, "method_not_allowed")


class TestPrefetch:
    @pytest.fixture
    def settings_overrides(self, mail_server: MailServer) -> dict[str, Any]:
        return {**mail_settings(mail_server), "register_verification_enabled": True}

    async def test_opening_the_mailed_link_spends_no_token(
        self, client: httpx.AsyncClient, mail: MailServer
    ) -> None:
        await register(client, "alice")
        [message] = await mail.wait_for("alice@example.com")
        ISSUED_TOKENS.append(message.token)
        link = httpx.URL(f"/verify-registration?token={message.token}")
        # A scanner fetches the link (and its assets) as often as it likes.
        for _ in range(3):
            assert (await client.get(link)).status_code == 200
            assert (await client.head(link)).status_code in (200, 405)
        assert (await client.get("/pages/assets/pages.js")).status_code == 200
        # The token is still good for the person who clicks.
        confirmed = await client.post(
            "/accounts/verify-registration", json={"token": message.token}
        )
        assert confirmed.status_code == 204


def test_an_installed_package_ships_every_template_and_asset() -> None:
    """pyproject.toml's package-data globs cover every file the pages and mails read, so a
    wheel (or `pip install .` in an image) has them all."""
    root = Path(__file__).resolve().parents[2]
    package = Path(app.accounts.__file__).parent
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["app.accounts"]
    shipped = {path for pattern in patterns for path in package.glob(pattern) if path.is_file()}
    needed = {
        path
        for folder in ("templates", "static")
        for path in (package / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert needed
    assert needed <= shipped, sorted(str(path) for path in needed - shipped)
