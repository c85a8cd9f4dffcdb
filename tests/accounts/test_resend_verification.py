"""POST /accounts/resend-verification: always 202 with the same body; a new link only for an
existing, unconfirmed account; limited per address (429) and per account (silently: no mail,
the same 202, so the limit cannot tell that the account exists)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.accounts.models import AccountToken
from app.state import app_state
from tests.conftest import mail_settings
from tests.support.helpers import PASSWORD, assert_error, login_pair
from tests.support.mail_server import MailServer

PROXY = "127.0.0.0/8"


@pytest.fixture
def settings_overrides(mail_server: MailServer) -> dict[str, Any]:
    return {
        **mail_settings(mail_server),
        "register_verification_enabled": True,
        "rate_limit_enabled": True,
        "rate_limit_resend_verification_per_address": "6/hour",
        "rate_limit_resend_verification_per_account": "2/hour",
        "rate_limit_register_per_address": "100/hour",
        "trusted_proxies": PROXY,
    }


def _from(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def _register(client: httpx.AsyncClient, username: str) -> None:
    body = {
        "username": username,
        "email": f"{username}@example.com",
        "password": PASSWORD,
        "password_confirm": PASSWORD,
    }
    response = await client.post("/accounts/register", json=body)
    assert response.status_code == 201, response.text


async def _resend(
    client: httpx.AsyncClient, login: str, address: str = "198.51.100.1"
) -> httpx.Response:
    return await client.post(
        "/accounts/resend-verification", json={"login": login}, headers=_from(address)
    )


async def _tokens(app: FastAPI) -> int:
    async with app_state(app).sessionmaker() as session:
        query = select(func.count()).select_from(AccountToken)
        return int((await session.execute(query)).scalar_one())


async def test_a_new_link_confirms_the_account(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    await _register(client, "alice")
    [first] = await mail.wait_for("alice@example.com")
    response = await _resend(client, "alice@example.com")
    assert response.status_code == 202
    assert response.json() == {
        "detail": "If an unconfirmed account matches, a new link to confirm it has been mailed."
    }
    _, second = await mail.wait_for("alice@example.com", count=2)
    assert second.subject == "Confirm your Gallery API account"
    assert second.token != first.token
    assert second.message.get_body(preferencelist=("html",)) is not None
    confirmed = await client.post("/accounts/verify-registration", json={"token": second.token})
    assert confirmed.status_code == 204
    await login_pair(client, "alice")


async def test_the_answer_is_the_same_for_unknown_confirmed_and_unconfirmed_accounts(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    await _register(client, "alice")
    await _register(client, "bob")
    [bob_mail] = await mail.wait_for("bob@example.com")
    await client.post("/accounts/verify-registration", json={"token": bob_mail.token})
    before = await _tokens(app)

    answers = [await _resend(client, login) for login in ("alice", "bob", "nobody")]
    assert {response.status_code for response in answers} == {202}
    assert len({response.content for response in answers}) == 1
    # Only the unconfirmed account got a new link.
    await mail.wait_for("alice@example.com", count=2)
    assert len(mail.mails_to("bob@example.com")) == 1
    assert await _tokens(app) == before + 1


async def test_over_the_account_limit_no_mail_goes_out_and_the_answer_stays(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    await _register(client, "alice")
    await mail.wait_for("alice@example.com")
    # Username and email count against the same account, from different addresses.
    first = await _resend(client, "alice", "198.51.100.1")
    second = await _resend(client, "alice@example.com", "198.51.100.2")
    third = await _resend(client, "ALICE", "198.51.100.3")
    assert [r.status_code for r in (first, second, third)] == [202, 202, 202]
    assert first.content == second.content == third.content
    await mail.wait_for("alice@example.com", count=3)
    await _register(client, "zed")  # a later mail proves delivery has caught up
    await mail.wait_for("zed@example.com")
    assert len(mail.mails_to("alice@example.com")) == 3


async def test_resending_is_limited_per_address(
    client: httpx.AsyncClient, mail: MailServer
) -> None:
    for n in range(6):
        response = await _resend(client, f"nobody{n}", "198.51.100.9")
        assert response.status_code == 202
    limited = await _resend(client, "nobody-else", "198.51.100.9")
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) > 0
    # Another address is not affected.
    assert (await _resend(client, "nobody-else", "198.51.100.10")).status_code == 202


@pytest.mark.parametrize(
    "body",
    [{}, {"login": ""}, {"login": "x" * 321}, {"login": "alice", "extra": 1}, {"login": 5}],
)
async def test_bad_bodies_are_validation_errors(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await client.post("/accounts/resend-verification", json=body)
    assert_error(response, 422, "validation_error")
