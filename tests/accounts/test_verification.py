"""REGISTER_VERIFICATION_ENABLED: new accounts and new email addresses are confirmed through
a token mailed to a real SMTP server on loopback."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.state import app_state
from app.users.models import User
from tests.conftest import mail_settings
from tests.support.helpers import PASSWORD, assert_error, bearer, login_pair
from tests.support.mail_server import MailServer


@pytest.fixture
def settings_overrides(mail_server: MailServer) -> dict[str, Any]:
    return {**mail_settings(mail_server), "register_verification_enabled": True}


async def _register(client: httpx.AsyncClient, username: str) -> httpx.Response:
    return await client.post(
        "/accounts/register",
        json={
            "username": username,
            "email": f"{username}@example.com",
            "password": PASSWORD,
            "password_confirm": PASSWORD,
        },
    )


async def _verify(client: httpx.AsyncClient, path: str, token: str) -> httpx.Response:
    return await client.post(path, json={"token": token})


async def _verified_user(client: httpx.AsyncClient, mail: MailServer, username: str) -> str:
    """Register and confirm through the API; the access token of a new session."""
    assert (await _register(client, username)).status_code == 201
    [message] = await mail.wait_for(f"{username}@example.com")
    assert (await _verify(client, "/accounts/verify-registration", message.token)).is_success
    token: str = (await login_pair(client, username))["access_token"]
    return token


async def _stored_user(app: FastAPI, username: str) -> User:
    async with app_state(app).sessionmaker() as session:
        query = select(User).where(User.username == username)
        return (await session.execute(query)).scalar_one()


async def test_unverified_account_cannot_sign_in_until_confirmed(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    response = await _register(client, "alice")
    assert response.status_code == 201
    assert (await _stored_user(app, "alice")).is_verified is False
    blocked = await client.post("/accounts/login", json={"login": "alice", "password": PASSWORD})
    assert_error(blocked, 403, "account_not_verified")
    # A wrong password still gets the ordinary answer: the flag is not revealed to guessers.
    wrong = await client.post("/accounts/login", json={"login": "alice", "password": "nope-nope"})
    assert_error(wrong, 401, "invalid_credentials")

    [message] = await mail.wait_for("alice@example.com")
    assert message.subject == "Confirm your Gallery API account"
    assert "http://app.test/verify-registration?token=" in message.body
    confirmed = await _verify(client, "/accounts/verify-registration", message.token)
    assert confirmed.status_code == 204
    assert (await _stored_user(app, "alice")).is_verified is True
    pair = await login_pair(client, "alice")
    assert (await client.get("/users/me", headers=bearer(pair["access_token"]))).is_success


async def test_registration_token_works_once(client: httpx.AsyncClient, mail: MailServer) -> None:
    await _register(client, "alice")
    [message] = await mail.wait_for("alice@example.com")
    assert (await _verify(client, "/accounts/verify-registration", message.token)).is_success
    again = await _verify(client, "/accounts/verify-registration", message.token)
    assert_error(again, 400, "invalid_link_token")


async def test_registration_token_is_not_a_reset_token(
    client: httpx.AsyncClient, mail: MailServer
) -> None:
    await _register(client, "alice")
    [message] = await mail.wait_for("alice@example.com")
    reset = await client.post(
        "/accounts/reset-password",
        json={
            "token": message.token,
            "password": "x-new-passphrase",
            "password_confirm": "x-new-passphrase",
        },
    )
    assert_error(reset, 400, "invalid_link_token")


async def test_new_email_takes_effect_only_when_confirmed(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    token = await _verified_user(client, mail, "alice")
    response = await client.patch(
        "/accounts/profile",
        headers=bearer(token),
        json={"email": "alice@new.example", "password": PASSWORD},
    )
    assert response.status_code == 200
    assert response.json()["email"] == "alice@example.com"
    [message] = await mail.wait_for("alice@new.example")
    assert "http://app.test/verify-email?token=" in message.body
    assert (await _stored_user(app, "alice")).email == "alice@example.com"

    confirmed = await _verify(client, "/accounts/verify-email", message.token)
    assert confirmed.status_code == 204
    assert (await _stored_user(app, "alice")).email == "alice@new.example"
    profile = (await client.get("/accounts/profile", headers=bearer(token))).json()
    assert profile["email"] == "alice@new.example"
    await login_pair(client, "alice@new.example")
    old = await client.post(
        "/accounts/login", json={"login": "alice@example.com", "password": PASSWORD}
    )
    assert_error(old, 401, "invalid_credentials")
    again = await _verify(client, "/accounts/verify-email", message.token)
    assert_error(again, 400, "invalid_link_token")


async def test_email_taken_before_confirmation_is_refused(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    token = await _verified_user(client, mail, "alice")
    await client.patch(
        "/accounts/profile",
        headers=bearer(token),
        json={"email": "x@example.com", "password": PASSWORD},
    )
    [message] = await mail.wait_for("x@example.com")
    # Someone else registers that address first.
    bob_token = await _verified_user(client, mail, "bob")
    await client.patch(
        "/accounts/profile",
        headers=bearer(bob_token),
        json={"email": "x@example.com", "password": PASSWORD},
    )
    bob_message = (await mail.wait_for("x@example.com", count=2))[1]
    assert (await _verify(client, "/accounts/verify-email", bob_message.token)).is_success
    refused = await _verify(client, "/accounts/verify-email", message.token)
    assert_error(refused, 409, "email_taken")
    assert (await _stored_user(app, "alice")).email == "alice@example.com"
