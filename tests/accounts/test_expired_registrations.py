"""An account never verified within VERIFICATION_EXPIRE_HOURS does not squat: its username
and email can be registered again (the stale account is removed then); before that, they
are taken."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from app.accounts.models import AccountToken
from app.db import utcnow
from app.state import app_state
from app.users.models import User
from tests.conftest import mail_settings
from tests.support.helpers import PASSWORD, assert_error, login_pair
from tests.support.mail_server import MailServer

EXPIRE_HOURS = 48


@pytest.fixture
def settings_overrides(mail_server: MailServer) -> dict[str, Any]:
    return {
        **mail_settings(mail_server),
        "register_verification_enabled": True,
        "verification_expire_hours": EXPIRE_HOURS,
    }


async def _register(client: httpx.AsyncClient, username: str, email: str) -> httpx.Response:
    return await client.post(
        "/accounts/register",
        json={
            "username": username,
            "email": email,
            "password": PASSWORD,
            "password_confirm": PASSWORD,
        },
    )


async def _age(app: FastAPI, username: str, hours: float) -> None:
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(
            update(User)
            .where(User.username == username)
            .values(date_joined=utcnow() - timedelta(hours=hours))
        )


async def _users(app: FastAPI) -> list[tuple[str, str, bool]]:
    async with app_state(app).sessionmaker() as session:
        rows = await session.execute(
            select(User.username, User.email, User.is_verified).order_by(User.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


@pytest.mark.parametrize(
    ("username", "email"),
    [
        ("squatter", "owner@example.com"),  # the email of its real owner
        ("owner", "squatter@example.net"),  # the name its owner wants
        ("OWNER", "other@example.net"),  # a look-alike of the name
    ],
)
async def test_expired_unverified_account_no_longer_blocks_registration(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer, username: str, email: str
) -> None:
    assert (await _register(client, username, email)).status_code == 201
    [squatter_mail] = await mail.wait_for(email)
    await _age(app, username, EXPIRE_HOURS + 1)

    owned = await _register(client, "owner", "owner@example.com")
    assert owned.status_code == 201, owned.text
    assert await _users(app) == [("owner", "owner@example.com", False)]
    async with app_state(app).sessionmaker() as session:
        tokens = list((await session.execute(select(AccountToken.user_id))).scalars())
    assert tokens == [owned.json()["id"]]
    # The squatter's old link is worthless; the owner's works.
    stale = await client.post("/accounts/verify-registration", json={"token": squatter_mail.token})
    assert_error(stale, 400, "invalid_link_token")
    # When the squatter used the owner's address, the owner's mail is the second one there.
    count = 2 if email == "owner@example.com" else 1
    owner_mail = (await mail.wait_for("owner@example.com", count=count))[-1]
    confirmed = await client.post("/accounts/verify-registration", json={"token": owner_mail.token})
    assert confirmed.status_code == 204
    await login_pair(client, "owner")


async def test_unverified_account_within_its_time_still_holds_name_and_email(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    assert (await _register(client, "owner", "owner@example.com")).status_code == 201
    await _age(app, "owner", EXPIRE_HOURS - 1)
    assert_error(await _register(client, "owner", "x@example.net"), 409, "username_taken")
    assert_error(await _register(client, "xavier", "owner@example.com"), 409, "email_taken")
    assert len(await _users(app)) == 1


async def test_expired_but_verified_account_is_never_removed(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    assert (await _register(client, "owner", "owner@example.com")).status_code == 201
    [message] = await mail.wait_for("owner@example.com")
    verified = await client.post("/accounts/verify-registration", json={"token": message.token})
    assert verified.status_code == 204
    await _age(app, "owner", EXPIRE_HOURS * 10)
    assert_error(await _register(client, "owner", "x@example.net"), 409, "username_taken")
    assert await _users(app) == [("owner", "owner@example.com", True)]
