"""Reset links tell nothing: the same answer whether or not the account exists, with the
lookup and the mail after the response; and at most RATE_LIMIT_RESET_PER_ACCOUNT mails per
account, over which the answer is still the same 202 and no mail goes out. (That the two
answers also take the same time is shown by bench/reset_link_timing.py, not timed here.)"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.accounts.models import AccountToken
from app.state import app_state
from tests.conftest import mail_settings
from tests.support.helpers import sign_up
from tests.support.mail_server import MailServer

PROXY = "127.0.0.0/8"


@pytest.fixture
def settings_overrides(mail_server: MailServer) -> dict[str, Any]:
    return {
        **mail_settings(mail_server),
        "rate_limit_enabled": True,
        "rate_limit_reset_per_account": "2/hour",
        "rate_limit_reset_per_address": "100/hour",
        "rate_limit_login_per_account": "100/minute",
        "trusted_proxies": PROXY,
    }


async def _send(client: httpx.AsyncClient, login: str, address: str) -> httpx.Response:
    return await client.post(
        "/accounts/send-reset-password-link",
        json={"login": login},
        headers={"X-Forwarded-For": address},
    )


async def _tokens(app: FastAPI) -> int:
    async with app_state(app).sessionmaker() as session:
        query = select(func.count()).select_from(AccountToken)
        return int((await session.execute(query)).scalar_one())


async def test_reset_mails_are_limited_per_account_with_the_same_answer(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    await sign_up(client, "alice")
    answers = []
    # From three different addresses, by name and by email: one account all the same.
    for login, address in (
        ("alice", "198.51.100.1"),
        ("alice@example.com", "198.51.100.2"),
        ("ALICE", "198.51.100.3"),
        ("alice", "198.51.100.4"),
    ):
        answers.append(await _send(client, login, address))
    missing = await _send(client, "nobody", "198.51.100.5")
    for response in [*answers, missing]:
        assert response.status_code == 202
        assert response.json() == answers[0].json()
    await mail.wait_for("alice@example.com", count=2)
    await asyncio.sleep(0.3)  # a third mail would have arrived by now
    assert len(mail.mails_to("alice@example.com")) == 2
    assert await _tokens(app) == 2


async def test_other_accounts_keep_their_own_reset_budget(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    await sign_up(client, "alice")
    await sign_up(client, "bob")
    for number in range(3):
        assert (await _send(client, "alice", f"198.51.100.{number}")).status_code == 202
    assert (await _send(client, "bob", "198.51.100.9")).status_code == 202
    [bob_mail] = await mail.wait_for("bob@example.com")
    assert "/reset-password?token=" in bob_mail.body
