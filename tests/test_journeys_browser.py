"""The mailed journeys in a real browser: Debian's Chromium driven by Playwright against
`gallery serve`, with mail delivered to a real SMTP server on loopback.

From the mail as a client parses it (the HTML part's link) to the signed-in result: confirm a
new account with one click and sign in; reset a forgotten password (typed twice) and end up
signed in with it. Along the way: a mail scanner's prefetch of the link spends nothing, the
token leaves the address bar at once, the API's error `detail` is what the page shows, no
request leaves the app's origin, no CSP rule is broken and no token reaches the server's log.
Saves the screenshots the README shows (docs/images/journey-*.png, mail-*.png).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.support.helpers import PASSWORD
from tests.support.live_server import ROOT, LiveServer, free_port, live_server
from tests.support.log_capture import find_leaks
from tests.support.mail_server import MailServer, ReceivedMail
from tests.test_browser import BrowserSession, browser

__all__ = ["browser"]  # the fixture, shared with tests/test_browser.py

pytestmark = [pytest.mark.browser, pytest.mark.slow]

IMAGES = ROOT / "docs" / "images"
NEW_PASSWORD = "a-brand-new-passphrase-42"


class _Hrefs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(value for name, value in attrs if name == "href" and value)


def _html_part(mail: ReceivedMail) -> str:
    part = mail.message.get_body(preferencelist=("html",))
    assert part is not None, "no HTML part"
    return str(part.get_content())  # type: ignore[attr-defined]


def _mailed_link(mail: ReceivedMail, path: str) -> str:
    """The link a person clicks: the first one in the HTML part that leads to `path`."""
    parser = _Hrefs()
    parser.feed(_html_part(mail))
    links = [href for href in parser.hrefs if f"{path}?token=" in href]
    assert links, parser.hrefs
    return links[0]


def _wait_for_mail(mails: MailServer, address: str, count: int = 1) -> list[ReceivedMail]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        received = mails.mails_to(address)
        if len(received) >= count:
            return received
        time.sleep(0.05)
    raise AssertionError(f"expected {count} mails to {address}, got {len(mails.mails_to(address))}")


@pytest.fixture
def mails() -> Iterator[MailServer]:
    server = MailServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _serve(tmp_path: Path, mails: MailServer, **settings: str) -> Any:
    """The app on a port known in advance, so FRONTEND_URL can name it: the mailed links
    lead to the app's own pages, as with the default FRONTEND_URL."""
    port = free_port()
    return live_server(
        tmp_path,
        PORT=str(port),
        FRONTEND_URL=f"http://127.0.0.1:{port}",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(mails.port),
        SMTP_STARTTLS="false",
        SMTP_TIMEOUT="5",
        **settings,
    )


def _register(server: LiveServer, username: str) -> None:
    body = {
        "username": username,
        "email": f"{username}@example.com",
        "password": PASSWORD,
        "password_confirm": PASSWORD,
    }
    response = httpx.post(f"{server.url}/accounts/register", json=body)
    assert response.status_code == 201, response.text


def _assert_clean(browser: BrowserSession, server: LiveServer, secrets: list[str]) -> None:
    assert not browser.off_origin(server.url), browser.off_origin(server.url)
    violations = [m for m in browser.console if "Content Security Policy" in m]
    assert not violations, violations
    assert not find_leaks(server.log().splitlines(), secrets)


def _screenshot(browser: BrowserSession, name: str) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / f"{name}.png"
    browser.page.screenshot(path=str(path))
    assert path.stat().st_size > 5_000


def _screenshot_mail(browser: BrowserSession, mail: ReceivedMail, name: str) -> None:
    """The HTML part as a mail client shows it (loaded as content: it fetches nothing)."""
    page = browser.context.new_page()
    try:
        page.set_viewport_size({"width": 720, "height": 560})
        page.set_content(_html_part(mail))
        path = IMAGES / f"{name}.png"
        page.screenshot(path=str(path))
        assert path.stat().st_size > 5_000
    finally:
        page.close()


def test_confirm_a_new_account_from_the_mail_and_sign_in(
    tmp_path: Path, mails: MailServer, browser: BrowserSession
) -> None:
    with _serve(tmp_path, mails, REGISTER_VERIFICATION_ENABLED="true") as server:
        _register(server, "alice")
        [mail] = _wait_for_mail(mails, "alice@example.com")
        link = _mailed_link(mail, "/verify-registration")
        assert link.startswith(f"{server.url}/verify-registration?token={mail.token}")
        # A mail scanner opens every link first: it changes nothing.
        assert httpx.get(link).status_code == 200

        page = browser.page
        page.goto(link)
        page.wait_for_selector("#confirm-button", state="visible")
        # The token left the address bar at once (and the login in the fragment with it).
        assert page.url == f"{server.url}/verify-registration"
        assert page.evaluate("window.location.href") == f"{server.url}/verify-registration"
        _screenshot(browser, "journey-verify-registration")

        page.click("#confirm-button")
        page.wait_for_selector("#sign-in", state="visible")
        assert page.locator("#title").inner_text() == "Your account is confirmed"
        assert page.input_value("#sign-in-login") == "alice"
        page.fill("#sign-in-password", PASSWORD)
        page.click("#sign-in-form button[type=submit]")
        page.wait_for_selector("#signed-in", state="visible")
        assert page.locator("#signed-in-name").inner_text() == "alice"
        assert page.locator("#signed-in-email").inner_text() == "alice@example.com"
        _screenshot(browser, "journey-verify-registration-signed-in")
        _screenshot_mail(browser, mail, "mail-verify-registration")

        # The link worked once: the same click again shows the API's own words.
        page.goto(link)
        page.click("#confirm-button")
        page.wait_for_selector("#request-link", state="visible")
        refused = httpx.post(
            f"{server.url}/accounts/verify-registration", json={"token": mail.token}
        ).json()
        assert page.locator("#message").inner_text() == refused["detail"]
        _assert_clean(browser, server, [mail.token, PASSWORD])


def test_reset_a_forgotten_password_from_the_mail_and_end_up_signed_in(
    tmp_path: Path, mails: MailServer, browser: BrowserSession
) -> None:
    with _serve(tmp_path, mails) as server:
        _register(server, "alice")
        sent = httpx.post(
            f"{server.url}/accounts/send-reset-password-link", json={"login": "alice"}
        )
        assert sent.status_code == 202
        [mail] = _wait_for_mail(mails, "alice@example.com")
        link = _mailed_link(mail, "/reset-password")
        assert httpx.get(link).status_code == 200  # the scanner again

        page = browser.page
        page.goto(link)
        page.wait_for_selector("#reset-form", state="visible")
        assert page.url == f"{server.url}/reset-password"
        assert page.input_value("#reset-login") == "alice"

        # Two different passwords: refused on the page, nothing sent.
        page.fill("#reset-password", NEW_PASSWORD)
        page.fill("#reset-password-again", NEW_PASSWORD + "x")
        page.click("#reset-form button[type=submit]")
        page.wait_for_selector("#message.error")
        assert "differ" in page.locator("#message").inner_text()
        assert not any(url.endswith("/accounts/reset-password") for url in browser.requested)

        # A password the API refuses: the page shows the API's `detail`, the token survives.
        weak = "12345678"
        page.fill("#reset-password", weak)
        page.fill("#reset-password-again", weak)
        with page.expect_response(lambda r: r.url.endswith("/accounts/reset-password")) as refused:
            page.click("#reset-form button[type=submit]")
        answer = refused.value
        assert answer.status == 422
        page.wait_for_function(
            "detail => document.getElementById('message').textContent === detail",
            arg=answer.json()["detail"],
        )

        page.fill("#reset-password", NEW_PASSWORD)
        page.fill("#reset-password-again", NEW_PASSWORD)
        _screenshot(browser, "journey-reset-password")
        page.click("#reset-form button[type=submit]")
        page.wait_for_selector("#signed-in", state="visible")
        assert page.locator("#signed-in-name").inner_text() == "alice"
        assert page.locator("#title").inner_text() == "Your password is changed"
        _screenshot(browser, "journey-reset-password-signed-in")
        _screenshot_mail(browser, mail, "mail-reset-password")

        # Signed in for real: the new password works, the old one does not, and the
        # account's list of sessions shows the browser's session.
        login = f"{server.url}/accounts/login"
        old = httpx.post(login, json={"login": "alice", "password": PASSWORD})
        assert old.status_code == 401
        new = httpx.post(login, json={"login": "alice", "password": NEW_PASSWORD})
        assert new.status_code == 200
        token = new.json()["access_token"]
        sessions = httpx.get(
            f"{server.url}/accounts/sessions", headers={"Authorization": f"Bearer {token}"}
        ).json()["items"]
        agents = [item["user_agent"] or "" for item in sessions]
        assert any("Chrome" in agent for agent in agents), agents
        # And the owner was told.
        _, notice = _wait_for_mail(mails, "alice@example.com", count=2)
        assert notice.subject == "Your password was reset (Gallery API)"

        # Sign out from the page ends the browser's session.
        page.click("#sign-out")
        page.wait_for_selector("#signed-out", state="visible")
        sessions = httpx.get(
            f"{server.url}/accounts/sessions", headers={"Authorization": f"Bearer {token}"}
        ).json()["items"]
        assert not any("Chrome" in (item["user_agent"] or "") for item in sessions)
        _assert_clean(browser, server, [mail.token, NEW_PASSWORD, token])


def test_a_link_without_its_token_offers_a_new_one(
    tmp_path: Path, mails: MailServer, browser: BrowserSession
) -> None:
    with _serve(tmp_path, mails) as server:
        _register(server, "alice")
        page = browser.page
        page.goto(f"{server.url}/reset-password")
        page.wait_for_selector("#request-link-form", state="visible")
        page.fill("#request-link-login", "alice@example.com")
        page.click("#request-link-form button[type=submit]")
        page.wait_for_selector("#message.success")
        [mail] = _wait_for_mail(mails, "alice@example.com")
        assert mail.subject == "Reset your Gallery API password"
        _assert_clean(browser, server, [mail.token])


def test_a_hostile_link_stays_text(
    tmp_path: Path, mails: MailServer, browser: BrowserSession
) -> None:
    """Whatever a forged link carries in its query or fragment lands in the page as text."""
    payload = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    with _serve(tmp_path, mails) as server:
        page = browser.page
        page.goto(f"{server.url}/reset-password?token={quote(payload)}#login={quote(payload)}")
        page.wait_for_selector("#reset-form", state="visible")
        assert page.input_value("#reset-login") == payload
        page.fill("#reset-password", NEW_PASSWORD)
        page.fill("#reset-password-again", NEW_PASSWORD)
        page.click("#reset-form button[type=submit]")
        page.wait_for_selector("#request-link", state="visible")
        assert page.evaluate("window.pwned") is None
        assert page.locator("img").count() == 0
        assert page.url == f"{server.url}/reset-password"
        _assert_clean(browser, server, [])


def test_confirm_a_new_email_address_from_the_mail(
    tmp_path: Path, mails: MailServer, browser: BrowserSession
) -> None:
    with _serve(tmp_path, mails, REGISTER_VERIFICATION_ENABLED="true") as server:
        _register(server, "alice")
        [welcome] = _wait_for_mail(mails, "alice@example.com")
        confirmed = httpx.post(
            f"{server.url}/accounts/verify-registration", json={"token": welcome.token}
        )
        assert confirmed.status_code == 204
        login = httpx.post(
            f"{server.url}/accounts/login", json={"login": "alice", "password": PASSWORD}
        )
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        body = {"email": "alice@new.example", "password": PASSWORD}  # it needs the password
        changed = httpx.patch(f"{server.url}/accounts/profile", json=body, headers=headers)
        assert changed.status_code == 200, changed.text
        [mail] = _wait_for_mail(mails, "alice@new.example")
        link = _mailed_link(mail, "/verify-email")
        assert httpx.get(link).status_code == 200  # the scanner

        page = browser.page
        page.goto(link)
        page.wait_for_selector("#confirm-button", state="visible")
        assert page.url == f"{server.url}/verify-email"
        page.click("#confirm-button")
        page.wait_for_selector("#done", state="visible")
        profile = httpx.get(f"{server.url}/accounts/profile", headers=headers).json()
        assert profile["email"] == "alice@new.example"
        # The old address is told.
        _, notice = _wait_for_mail(mails, "alice@example.com", count=2)
        assert notice.subject == "Your email address was changed (Gallery API)"
        _screenshot_mail(browser, notice, "mail-email-changed")
        _assert_clean(browser, server, [mail.token])
