"""Password reset by mail, profile changes and account deletion, with a real SMTP server on
loopback; the tests read the mails, take the token out and finish the flow."""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import AccountSession, AccountToken
from app.db import utcnow
from app.images.models import Image
from app.main import create_app
from app.state import app_state
from app.users.models import User
from tests.conftest import empty_tables, mail_settings, make_settings
from tests.support.helpers import PASSWORD, assert_error, bearer, login_pair, sign_up
from tests.support.image_host import ImageHost
from tests.support.mail_server import MailServer, free_port

NEW_PASSWORD = "an-entirely-new-passphrase"


@pytest.fixture
def settings_overrides(mail_server: MailServer) -> dict[str, Any]:
    return mail_settings(mail_server)


async def _send_link(client: httpx.AsyncClient, login: str) -> httpx.Response:
    return await client.post("/accounts/send-reset-password-link", json={"login": login})


async def _reset(
    client: httpx.AsyncClient, token: str, password: str = NEW_PASSWORD
) -> httpx.Response:
    return await client.post(
        "/accounts/reset-password",
        json={"token": token, "password": password, "password_confirm": password},
    )


async def _count(app: FastAPI, model: Any) -> int:
    async with app_state(app).sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_password_reset_by_mail_ends_every_session(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    account = await sign_up(client, "alice")
    second = await login_pair(client, "alice")
    response = await _send_link(client, "alice@example.com")
    assert response.status_code == 202
    [message] = await mail.wait_for("alice@example.com")
    assert message.subject == "Reset your Gallery API password"
    assert "http://app.test/reset-password?token=" in message.body
    # Stored only as a hash.
    async with app_state(app).sessionmaker() as session:
        stored = list((await session.execute(select(AccountToken.token_hash))).scalars())
    assert message.token not in stored
    assert len(stored) == 1

    reset = await _reset(client, message.token)
    assert reset.status_code == 204
    assert reset.content == b""
    for token in (account.token, second["access_token"]):
        assert_error(await client.get("/users/me", headers=bearer(token)), 401, "invalid_token")
    refresh = await client.post(
        "/accounts/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert_error(refresh, 401, "invalid_token")
    assert await _count(app, AccountSession) == 0
    await login_pair(client, "alice", NEW_PASSWORD)
    old = await client.post("/accounts/login", json={"login": "alice", "password": PASSWORD})
    assert_error(old, 401, "invalid_credentials")


async def test_reset_token_works_once(client: httpx.AsyncClient, mail: MailServer) -> None:
    await sign_up(client, "alice")
    await _send_link(client, "alice")
    [message] = await mail.wait_for("alice@example.com")
    assert (await _reset(client, message.token)).status_code == 204
    again = await _reset(client, message.token, "yet-another-passphrase")
    assert_error(again, 400, "invalid_link_token")
    await login_pair(client, "alice", NEW_PASSWORD)


async def test_expired_reset_token_is_refused(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    await sign_up(client, "alice")
    await _send_link(client, "alice")
    [message] = await mail.wait_for("alice@example.com")
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(
            update(AccountToken).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert_error(await _reset(client, message.token), 400, "invalid_link_token")
    await login_pair(client, "alice", PASSWORD)


async def test_reset_token_lives_for_the_configured_minutes(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    await sign_up(client, "alice")
    before = utcnow()
    await _send_link(client, "alice")
    await mail.wait_for("alice@example.com")
    async with app_state(app).sessionmaker() as session:
        stored = (await session.execute(select(AccountToken))).scalar_one()
    lifetime = stored.expires_at - before
    assert timedelta(minutes=59) < lifetime < timedelta(minutes=61)
    assert stored.purpose == "reset_password"


async def test_reset_applies_the_policy_and_keeps_the_token(
    client: httpx.AsyncClient, mail: MailServer
) -> None:
    await sign_up(client, "alice")
    await _send_link(client, "alice")
    [message] = await mail.wait_for("alice@example.com")
    assert_error(await _reset(client, message.token, "password1"), 422, "weak_password")
    # A refused attempt does not spend the token.
    assert (await _reset(client, message.token)).status_code == 204


@pytest.mark.parametrize("token", ["made-up-token", "x" * 43])
async def test_unknown_reset_token_is_refused(client: httpx.AsyncClient, token: str) -> None:
    assert_error(await _reset(client, token), 400, "invalid_link_token")


async def test_reset_link_answer_does_not_reveal_whether_the_account_exists(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    await sign_up(client, "alice")
    known = await _send_link(client, "alice")
    unknown = await _send_link(client, "nobody@example.com")
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()
    assert known.headers.get("content-length") == unknown.headers.get("content-length")
    await mail.wait_for("alice@example.com")
    assert mail.mails_to("nobody@example.com") == []
    assert await _count(app, AccountToken) == 1


async def test_login_answers_known_and_unknown_accounts_alike(client: httpx.AsyncClient) -> None:
    await sign_up(client, "alice")

    async def attempt(login: str) -> tuple[float, httpx.Response]:
        started = time.perf_counter()
        response = await client.post(
            "/accounts/login", json={"login": login, "password": "wrong-password-1"}
        )
        return time.perf_counter() - started, response

    known = [await attempt("alice") for _ in range(5)]
    unknown = [await attempt("nobody") for _ in range(5)]
    assert {response.status_code for _, response in known + unknown} == {401}
    assert {response.text for _, response in known + unknown} == {known[0][1].text}
    # Both sides verify one Argon2 hash; only a gross difference (no hashing at all for
    # unknown users) would fail this loose ratio.
    ratio = statistics.median(t for t, _ in known) / statistics.median(t for t, _ in unknown)
    assert 0.25 < ratio < 4, ratio


async def test_deactivated_account_gets_no_reset_mail(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    await sign_up(client, "alice")
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(update(User).values(is_active=False))
    assert (await _send_link(client, "alice")).status_code == 202
    assert await _count(app, AccountToken) == 0
    assert mail.mails_to("alice@example.com") == []


async def test_unreachable_mail_server_does_not_fail_the_request(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        database_url,
        smtp_host="127.0.0.1",
        smtp_port=free_port(),
        smtp_starttls=False,
        smtp_timeout=1.0,
    )
    application = create_app(settings)
    try:
        async with LifespanManager(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                await sign_up(client, "alice")
                with caplog.at_level(logging.ERROR, logger="app.mail"):
                    response = await _send_link(client, "alice")
        assert response.status_code == 202
        assert "could not send mail" in caplog.text
    finally:
        await empty_tables(database_url)


async def test_without_smtp_host_the_mail_is_logged_in_development(
    database_url: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    settings = make_settings(database_url, smtp_host=None, environment="development")
    application = create_app(settings)
    try:
        async with LifespanManager(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                await sign_up(client, "alice")
                with caplog.at_level(logging.WARNING, logger="app.mail"):
                    response = await _send_link(client, "alice")
        assert response.status_code == 202
        assert "SMTP_HOST is not set" in caplog.text
        assert "/reset-password?token=" in caplog.text
    finally:
        await empty_tables(database_url)


async def test_change_username_and_email_without_verification(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    account = await sign_up(client, "alice")
    response = await client.patch(
        "/accounts/profile",
        headers=account.headers,
        json={"username": "alicia", "email": "alicia@example.com", "password": PASSWORD},
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["username"], body["email"]) == ("alicia", "alicia@example.com")
    await login_pair(client, "alicia@example.com")
    async with app_state(app).sessionmaker() as session:
        user = (await session.execute(select(User))).scalar_one()
    assert (user.username_key, user.email_key) == ("alicia", "alicia@example.com")
    assert mail.mails_to("alicia@example.com") == []


async def test_change_profile_refuses_taken_names(client: httpx.AsyncClient) -> None:
    account = await sign_up(client, "alice")
    await sign_up(client, "bob")
    taken_name = await client.patch(
        "/accounts/profile", headers=account.headers, json={"username": "BOB"}
    )
    assert_error(taken_name, 409, "username_taken")
    taken_email = await client.patch(
        "/accounts/profile",
        headers=account.headers,
        json={"email": "bob@example.com", "password": PASSWORD},
    )
    assert_error(taken_email, 409, "email_taken")
    forbidden = await client.patch(
        "/accounts/profile", headers=account.headers, json={"is_admin": True}
    )
    assert_error(forbidden, 422, "validation_error")
    profile = (await client.get("/accounts/profile", headers=account.headers)).json()
    assert (profile["username"], profile["is_admin"]) == ("alice", False)


async def test_change_profile_requires_sign_in(client: httpx.AsyncClient) -> None:
    response = await client.patch("/accounts/profile", json={"username": "mallory"})
    assert_error(response, 401, "not_authenticated")


async def _delete(client: httpx.AsyncClient, token: str, password: str) -> httpx.Response:
    return await client.request(
        "DELETE", "/accounts/profile", headers=bearer(token), json={"password": password}
    )


async def test_delete_account_removes_user_sessions_and_images(
    app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    bob = await sign_up(client, "bob")
    for owner in (alice, bob):
        added = await client.post(
            f"/users/{owner.id}/images",
            headers=owner.headers,
            json={"image_url": image_host.url("/cat.png")},
        )
        assert added.status_code == 201, added.text
    response = await _delete(client, alice.token, PASSWORD)
    assert response.status_code == 204
    assert response.content == b""
    assert_error(await client.get("/users/me", headers=alice.headers), 401, "invalid_token")
    assert_error(await client.get(f"/users/{alice.id}"), 404, "user_not_found")
    async with app_state(app).sessionmaker() as session:
        users = list((await session.execute(select(User.username))).scalars())
        owners = list((await session.execute(select(Image.user_id))).scalars())
        sessions = list((await session.execute(select(AccountSession.user_id))).scalars())
    assert users == ["bob"]
    assert owners == [bob.id]
    assert sessions == [bob.id]


async def test_delete_account_needs_the_password(app: FastAPI, client: httpx.AsyncClient) -> None:
    account = await sign_up(client, "alice")
    assert_error(await _delete(client, account.token, "not-my-password"), 403, "wrong_password")
    assert await _count(app, User) == 1
    assert (await client.get("/users/me", headers=account.headers)).status_code == 200


class _FailingCommitSession(AsyncSession):
    async def commit(self) -> None:
        raise OperationalError("COMMIT", {}, Exception("the database went away"))


async def test_no_mail_goes_out_when_the_transaction_fails(
    app: FastAPI, client: httpx.AsyncClient, mail: MailServer
) -> None:
    await sign_up(client, "alice")
    working = app_state(app).sessionmaker
    app_state(app).sessionmaker = async_sessionmaker(
        app_state(app).engine, class_=_FailingCommitSession, expire_on_commit=False
    )
    try:
        response = await _send_link(client, "alice")
    finally:
        app_state(app).sessionmaker = working
    # The lookup, the token and the mail happen after the answer (which is the same whether
    # or not the account exists, so a failure there cannot show in it either).
    assert response.status_code == 202
    # The mail is sent only after a commit; give a wrongly sent one time to arrive.
    await asyncio.sleep(0.3)
    assert mail.mails_to("alice@example.com") == []
    assert await _count(app, AccountToken) == 0
    # The same request with a working database does send it.
    assert (await _send_link(client, "alice")).status_code == 202
    await mail.wait_for("alice@example.com")
