"""One stolen access token must not become the account: an email change needs the password,
pending mailed links die when the credentials change, and every password check is limited."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.accounts.models import AccountToken
from app.accounts.security import PasswordHasher
from app.state import app_state
from app.users.models import User
from tests.conftest import mail_settings
from tests.support.helpers import PASSWORD, Account, assert_error, bearer, login_pair
from tests.support.mail_server import MailServer

NEW_PASSWORD = "an-entirely-new-passphrase"
WRONG_PASSWORD = "not-the-right-passphrase"


@pytest.fixture
def settings_overrides(mail_server: MailServer) -> dict[str, Any]:
    return {
        **mail_settings(mail_server),
        "register_verification_enabled": True,
        "rate_limit_enabled": True,
        "rate_limit_login_per_account": "3/minute",
        "rate_limit_login_per_address": "100/minute",
        "rate_limit_register_per_address": "100/hour",
        "rate_limit_reset_per_address": "100/hour",
    }


async def _verified(client: httpx.AsyncClient, mail: MailServer, username: str) -> Account:
    """Register, confirm the address from the mail, and sign in."""
    email = f"{username}@example.com"
    registered = await client.post(
        "/accounts/register",
        json={
            "username": username,
            "email": email,
            "password": PASSWORD,
            "password_confirm": PASSWORD,
        },
    )
    assert registered.status_code == 201, registered.text
    [message] = await mail.wait_for(email)
    confirmed = await client.post("/accounts/verify-registration", json={"token": message.token})
    assert confirmed.status_code == 204
    mail.clear()
    token: str = (await login_pair(client, username))["access_token"]
    return Account(registered.json()["id"], username, email, token)


async def _stored_user(app: FastAPI, user_id: int) -> User:
    async with app_state(app).sessionmaker() as session:
        return (await session.execute(select(User).where(User.id == user_id))).scalar_one()


async def _pending_tokens(app: FastAPI, user_id: int) -> int:
    async with app_state(app).sessionmaker() as session:
        query = (
            select(func.count()).select_from(AccountToken).where(AccountToken.user_id == user_id)
        )
        return int((await session.execute(query)).scalar_one())


async def test_email_change_without_password_is_refused(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    alice = await _verified(client, mail, "alice")
    missing = await client.patch(
        "/accounts/profile", headers=alice.headers, json={"email": "mallory@example.net"}
    )
    body = assert_error(missing, 422, "validation_error")
    assert "password" in str(body)
    wrong = await client.patch(
        "/accounts/profile",
        headers=alice.headers,
        json={"email": "mallory@example.net", "password": WRONG_PASSWORD},
    )
    assert_error(wrong, 403, "wrong_password")
    assert (await _stored_user(app, alice.id)).email == "alice@example.com"
    assert await _pending_tokens(app, alice.id) == 0
    assert mail.mails_to("mallory@example.net") == []


async def test_username_change_needs_no_password(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    alice = await _verified(client, mail, "alice")
    renamed = await client.patch(
        "/accounts/profile", headers=alice.headers, json={"username": "alicia"}
    )
    assert renamed.status_code == 200, renamed.text
    assert (await _stored_user(app, alice.id)).username == "alicia"


async def test_email_change_with_password_mails_the_new_address(
    client: httpx.AsyncClient, mail: MailServer
) -> None:
    alice = await _verified(client, mail, "alice")
    changed = await client.patch(
        "/accounts/profile",
        headers=alice.headers,
        json={"email": "alice@new.example", "password": PASSWORD},
    )
    assert changed.status_code == 200, changed.text
    [message] = await mail.wait_for("alice@new.example")
    assert "/verify-email?token=" in message.body


async def _start_email_change_and_reset(
    client: httpx.AsyncClient, mail: MailServer, account: Account
) -> tuple[str, str]:
    """An attacker's pending email change and a reset link: both tokens."""
    changed = await client.patch(
        "/accounts/profile",
        headers=account.headers,
        json={"email": "mallory@example.net", "password": PASSWORD},
    )
    assert changed.status_code == 200, changed.text
    [change_mail] = await mail.wait_for("mallory@example.net")
    sent = await client.post("/accounts/send-reset-password-link", json={"login": account.email})
    assert sent.status_code == 202
    [reset_mail] = await mail.wait_for(account.email)
    return change_mail.token, reset_mail.token


async def _assert_links_dead(
    app: FastAPI, client: httpx.AsyncClient, account: Account, change: str, reset: str
) -> None:
    verify = await client.post("/accounts/verify-email", json={"token": change})
    assert_error(verify, 400, "invalid_link_token")
    reset_response = await client.post(
        "/accounts/reset-password",
        json={
            "token": reset,
            "password": "mallory-owns-it-now",
            "password_confirm": "mallory-owns-it-now",
        },
    )
    assert_error(reset_response, 400, "invalid_link_token")
    assert (await _stored_user(app, account.id)).email == account.email


async def test_password_change_kills_pending_email_change_and_reset_links(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    alice = await _verified(client, mail, "alice")
    change, reset = await _start_email_change_and_reset(client, mail, alice)
    changed = await client.post(
        "/accounts/change-password",
        headers=alice.headers,
        json={
            "old_password": PASSWORD,
            "password": NEW_PASSWORD,
            "password_confirm": NEW_PASSWORD,
        },
    )
    assert changed.status_code == 204, changed.text
    assert await _pending_tokens(app, alice.id) == 0
    await _assert_links_dead(app, client, alice, change, reset)


async def test_logout_all_kills_pending_email_change_and_reset_links(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    alice = await _verified(client, mail, "alice")
    change, reset = await _start_email_change_and_reset(client, mail, alice)
    out = await client.post("/accounts/logout-all", headers=alice.headers)
    assert out.status_code == 204
    assert await _pending_tokens(app, alice.id) == 0
    await _assert_links_dead(app, client, alice, change, reset)


async def test_password_reset_kills_pending_email_change(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    alice = await _verified(client, mail, "alice")
    change, reset = await _start_email_change_and_reset(client, mail, alice)
    done = await client.post(
        "/accounts/reset-password",
        json={"token": reset, "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD},
    )
    assert done.status_code == 204
    assert await _pending_tokens(app, alice.id) == 0
    verify = await client.post("/accounts/verify-email", json={"token": change})
    assert_error(verify, 400, "invalid_link_token")
    assert (await _stored_user(app, alice.id)).email == alice.email


class CountingHasher:
    """Counts the password checks the app makes (a spy around the real hasher)."""

    def __init__(self, hasher: PasswordHasher) -> None:
        self.real_verify = hasher.verify
        self.verifications = 0

    async def verify(self, password: str, password_hash: str) -> tuple[bool, str | None]:
        self.verifications += 1
        return await self.real_verify(password, password_hash)


def _count_verifications(app: FastAPI) -> CountingHasher:
    spy = CountingHasher(app_state(app).password_hasher)
    app_state(app).password_hasher.verify = spy.verify
    return spy


def _wrong_attempt(account: Account, kind: str) -> tuple[str, str, dict[str, Any]]:
    if kind == "change-password":
        return (
            "POST",
            "/accounts/change-password",
            {
                "old_password": WRONG_PASSWORD,
                "password": NEW_PASSWORD,
                "password_confirm": NEW_PASSWORD,
            },
        )
    if kind == "delete-account":
        return ("DELETE", "/accounts/profile", {"password": WRONG_PASSWORD})
    return ("PATCH", "/accounts/profile", {"email": "m@example.net", "password": WRONG_PASSWORD})


@pytest.mark.parametrize("kind", ["change-password", "delete-account", "email-change"])
async def test_wrong_passwords_count_against_the_account_sign_in_limit(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer, kind: str
) -> None:
    alice = await _verified(client, mail, "alice")  # one sign-in: 1 of 3
    spy = _count_verifications(app)
    method, path, body = _wrong_attempt(alice, kind)
    for _ in range(2):
        response = await client.request(method, path, headers=alice.headers, json=body)
        assert_error(response, 403, "wrong_password")
    limited = await client.request(method, path, headers=alice.headers, json=body)
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1
    # Refused before any hashing: two checks were made, the third never reached the hasher.
    assert spy.verifications == 2
    # The same budget as sign-ins: the right password is refused too until the window passes.
    login = await client.post("/accounts/login", json={"login": "alice", "password": PASSWORD})
    assert_error(login, 429, "rate_limited")
    assert spy.verifications == 2
    stored = await _stored_user(app, alice.id)
    assert stored.email == alice.email
    assert (await client.get("/accounts/profile", headers=bearer(alice.token))).status_code == 200
