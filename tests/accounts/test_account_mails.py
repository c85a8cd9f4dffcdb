"""Account mails as a mail client sees them: every mail is multipart/alternative with a text
and an HTML part rendered from the Jinja2 templates, the HTML autoescaped; and the notices
(password changed, password reset, email changed to the OLD address) go out through a real
SMTP server on loopback. A rendered example of each mail is kept in docs/mails/."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from app.accounts.mails import AccountMails, create_mail_templates
from app.config import Settings
from app.mail import Mail, Mailer
from app.users.models import User
from tests.conftest import ROOT, mail_settings
from tests.support.helpers import PASSWORD, bearer, login_pair, register, sign_up
from tests.support.mail_server import MailServer, ReceivedMail

NEW_PASSWORD = "an-entirely-new-passphrase"
HOSTILE_NAME = "<script>alert(1)</script>&\"x'"
EXAMPLES = ROOT / "docs" / "mails"


class _Links(HTMLParser):
    """What a mail client would find in the HTML part: link targets, scripts, visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.hrefs.extend(value for name, value in attrs if name == "href" and value)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(html: str) -> _Links:
    parser = _Links()
    parser.feed(html)
    parser.close()
    return parser


def _parts(message: EmailMessage) -> tuple[str, str]:
    """The text and HTML parts, as a client picks them from multipart/alternative."""
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    return str(text.get_content()), str(html.get_content())  # type: ignore[attr-defined]


def _settings() -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, environment="test", frontend_url="https://gallery.example"
    )


def _user(username: str = HOSTILE_NAME) -> User:
    return User(id=7, username=username, email="owner@example.com")


def _as_received(mail: Mail) -> EmailMessage:
    """The message Mailer would put on the wire, parsed back as a client parses it."""
    raw = Mailer(_settings())._message(mail).as_bytes()
    parsed = message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _every_mail(mails: AccountMails, username: str = HOSTILE_NAME) -> dict[str, Mail]:
    user = _user(username)
    when = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)
    token = "ExampleToken-abcdefghijklmnopqrstuvwxyz0123456"
    return {
        "verify_registration": mails.verify_registration(user, token),
        "reset_password": mails.reset_password(user, token),
        "verify_email": mails.verify_email(user, "new@example.com", token),
        "password_changed": mails.password_changed(user, when),
        "password_reset": mails.password_reset(user, when),
        "email_changed": mails.email_changed(_user_with_email(user), "old@example.com", when),
    }


def _user_with_email(user: User) -> User:
    return User(id=user.id, username=user.username, email="new@example.com")


@pytest.mark.parametrize(
    "name",
    [
        "verify_registration",
        "reset_password",
        "verify_email",
        "password_changed",
        "password_reset",
        "email_changed",
    ],
)
def test_each_mail_has_a_text_and_an_escaped_html_part(name: str) -> None:
    mails = AccountMails(create_mail_templates(), _settings())
    mail = _every_mail(mails)[name]
    text, html = _parts(_as_received(mail))

    # The text part shows the name as typed; the HTML part only escaped, never as markup.
    assert f"Hello {HOSTILE_NAME}," in text
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&#34;x&#39;" in html
    parsed = parse_html(html)
    assert "script" not in parsed.tags
    assert f"Hello {HOSTILE_NAME}," in "".join(parsed.text)
    # Every link in the HTML is one of ours, and also written out in the text part.
    assert parsed.hrefs
    for href in parsed.hrefs:
        assert href.startswith("https://gallery.example/"), href
        assert href in text


def test_rendered_examples_are_kept_in_docs() -> None:
    """docs/mails/ shows each mail as it is sent (README links them); rewritten each run."""
    mails = AccountMails(create_mail_templates(), _settings())
    EXAMPLES.mkdir(parents=True, exist_ok=True)
    for name, mail in _every_mail(mails, "alice").items():
        text, html = _parts(_as_received(mail))
        (EXAMPLES / f"{name}.html").write_text(html)
        (EXAMPLES / f"{name}.txt").write_text(f"Subject: {mail.subject}\n\n{text}")
        assert "Hello alice," in text


def test_link_mails_carry_the_token_and_the_login_in_the_fragment() -> None:
    mails = AccountMails(create_mail_templates(), _settings())
    mail = mails.reset_password(_user("al ice"), "tok-123")
    text, html = _parts(_as_received(mail))
    link = "https://gallery.example/reset-password?token=tok-123#login=al%20ice"
    assert link in text
    assert link in parse_html(html).hrefs
    assert "valid 60 minutes" in text
    # The address change link names no login: the page needs none.
    change = mails.verify_email(_user("alice"), "new@example.com", "tok-456")
    assert "https://gallery.example/verify-email?token=tok-456\n" in change.body


def test_a_template_variable_that_is_missing_fails_loudly() -> None:
    mails = AccountMails(create_mail_templates(), _settings())
    with pytest.raises(Exception, match="undefined"):
        mails.render("reset_password", to="a@example.com", subject="x", username="a")


@pytest.fixture
def settings_overrides(mail_server: MailServer) -> dict[str, Any]:
    return mail_settings(mail_server)


def _email_change(email: str) -> dict[str, str]:
    """The body of an email change: it needs the current password."""
    return {"email": email, "password": PASSWORD}


def _notice_text(mail: ReceivedMail) -> str:
    text, html = _parts(mail.message)
    assert parse_html(html).text
    return text


async def test_password_change_mails_a_notice(client: httpx.AsyncClient, mail: MailServer) -> None:
    account = await sign_up(client, "alice")
    response = await client.post(
        "/accounts/change-password",
        headers=account.headers,
        json={
            "old_password": PASSWORD,
            "password": NEW_PASSWORD,
            "password_confirm": NEW_PASSWORD,
        },
    )
    assert response.status_code == 204, response.text
    [notice] = await mail.wait_for("alice@example.com")
    assert notice.subject == "Your password was changed (Gallery API)"
    text = _notice_text(notice)
    assert "Hello alice," in text
    assert "http://app.test/reset-password" in text
    assert NEW_PASSWORD not in notice.message.as_string()


async def test_a_wrong_old_password_mails_nothing(
    client: httpx.AsyncClient, mail: MailServer
) -> None:
    account = await sign_up(client, "alice")
    response = await client.post(
        "/accounts/change-password",
        headers=account.headers,
        json={
            "old_password": "not-it-at-all",
            "password": NEW_PASSWORD,
            "password_confirm": NEW_PASSWORD,
        },
    )
    assert response.status_code == 403
    await sign_up(client, "bob")
    await client.post("/accounts/send-reset-password-link", json={"login": "bob"})
    await mail.wait_for("bob@example.com")  # mail is flowing; alice got none
    assert mail.mails_to("alice@example.com") == []


async def test_password_reset_mails_a_notice_after_the_link(
    client: httpx.AsyncClient, mail: MailServer
) -> None:
    await sign_up(client, "alice")
    sent = await client.post("/accounts/send-reset-password-link", json={"login": "alice"})
    assert sent.status_code == 202
    [link_mail] = await mail.wait_for("alice@example.com")
    text, html = _parts(link_mail.message)
    assert link_mail.token in text
    assert f"http://app.test/reset-password?token={link_mail.token}#login=alice" in (
        parse_html(html).hrefs
    )
    response = await client.post(
        "/accounts/reset-password",
        json={"token": link_mail.token, "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD},
    )
    assert response.status_code == 204, response.text
    _, notice = await mail.wait_for("alice@example.com", count=2)
    assert notice.subject == "Your password was reset (Gallery API)"
    assert "reset with a mailed link" in _notice_text(notice)


async def test_email_change_mails_a_notice_to_the_old_address(
    client: httpx.AsyncClient, mail: MailServer
) -> None:
    account = await sign_up(client, "alice")
    response = await client.patch(
        "/accounts/profile",
        headers=account.headers,
        json=_email_change("alice.new@example.com"),
    )
    assert response.status_code == 200, response.text
    [notice] = await mail.wait_for("alice@example.com")
    assert notice.recipients == ["alice@example.com"]
    assert notice.subject == "Your email address was changed (Gallery API)"
    text = _notice_text(notice)
    assert "from alice@example.com to alice.new@example.com" in text
    assert mail.mails_to("alice.new@example.com") == []


async def test_a_change_of_letter_case_mails_no_notice(
    client: httpx.AsyncClient, mail: MailServer
) -> None:
    account = await sign_up(client, "alice")
    response = await client.patch(
        "/accounts/profile",
        headers=account.headers,
        json=_email_change("Alice@example.com"),
    )
    assert response.status_code == 200, response.text
    await sign_up(client, "bob")
    await client.post("/accounts/send-reset-password-link", json={"login": "bob"})
    await mail.wait_for("bob@example.com")
    assert mail.mails_to("alice@example.com") == []
    assert mail.mails_to("Alice@example.com") == []


class TestVerifiedEmailChange:
    @pytest.fixture
    def settings_overrides(self, mail_server: MailServer) -> dict[str, Any]:
        return {**mail_settings(mail_server), "register_verification_enabled": True}

    async def test_notice_goes_to_the_old_address_once_the_new_one_is_confirmed(
        self, client: httpx.AsyncClient, mail: MailServer
    ) -> None:
        await register(client, "alice")
        [welcome] = await mail.wait_for("alice@example.com")
        confirmed = await client.post(
            "/accounts/verify-registration", json={"token": welcome.token}
        )
        assert confirmed.status_code == 204
        token = (await login_pair(client, "alice"))["access_token"]
        mail.clear()

        response = await client.patch(
            "/accounts/profile",
            headers=bearer(token),
            json=_email_change("alice.new@example.com"),
        )
        assert response.status_code == 200, response.text
        [confirm] = await mail.wait_for("alice.new@example.com")
        # Nothing has changed yet, so no notice.
        assert mail.mails_to("alice@example.com") == []
        text, _ = _parts(confirm.message)
        assert "confirm alice.new@example.com" in text
        verified = await client.post("/accounts/verify-email", json={"token": confirm.token})
        assert verified.status_code == 204, verified.text

        [notice] = await mail.wait_for("alice@example.com")
        assert "from alice@example.com to alice.new@example.com" in _notice_text(notice)
        profile = await client.get("/accounts/profile", headers=bearer(token))
        assert profile.json()["email"] == "alice.new@example.com"
