"""The password policy (same on register, change and reset) and changing one's password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.accounts.password_policy import common_passwords, password_problems
from app.state import app_state
from app.users.models import User
from tests.support.helpers import PASSWORD, assert_error, bearer, login_pair, sign_up

NEW_PASSWORD = "an-entirely-new-passphrase"
ROOT = Path(__file__).resolve().parent.parent.parent


def _register_body(username: str, password: str) -> dict[str, str]:
    return {
        "username": username,
        "email": f"{username}@example.com",
        "password": password,
        "password_confirm": password,
    }


def test_common_password_list_is_not_read_at_import() -> None:
    script = (
        "import app.main, app.accounts.password_policy as policy;"
        "assert policy.common_passwords.cache_info().currsize == 0"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT)  # noqa: S603


def test_common_password_list_is_shipped_and_large() -> None:
    words = common_passwords()
    assert len(words) >= 10_000
    assert {"password", "123456", "qwerty", "iloveyou"} <= words
    assert all(word == word.lower() for word in words)


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        ("a-long-enough-passphrase", []),
        ("short", ["at least 8"]),
        ("x" * 129, ["at most 128"]),
        ("9081726354", ["only digits"]),
        ("zephyrine", ["username or email"]),
        ("Zephyrine2024", ["username or email"]),
        ("enirihpez-x", []),
        ("mail.zephyrine.box", ["username or email"]),
        ("Password123", ["too common"]),
        ("12345678", ["only digits", "too common"]),
        ("1234", ["at least 8", "only digits", "too common"]),
    ],
)
def test_password_problems_lists_every_broken_rule(password: str, expected: list[str]) -> None:
    problems = password_problems(
        password,
        username="zephyrine",
        email="zephyrine@mail.example",
        common=common_passwords(),
    )
    assert len(problems) == len(expected), problems
    for problem, fragment in zip(problems, expected, strict=True):
        assert fragment in problem


async def test_register_refuses_common_password(app: FastAPI, client: httpx.AsyncClient) -> None:
    response = await client.post("/accounts/register", json=_register_body("alice", "iloveyou"))
    body = assert_error(response, 422, "weak_password")
    assert "too common" in body["detail"]
    async with app_state(app).sessionmaker() as session:
        assert (await session.execute(select(User))).first() is None


async def test_register_lists_all_failures_in_one_answer(client: httpx.AsyncClient) -> None:
    response = await client.post("/accounts/register", json=_register_body("alice", "123456"))
    body = assert_error(response, 422, "weak_password")
    messages = [error["msg"] for error in body["errors"]]
    assert len(messages) == 3
    assert any("at least 8" in message for message in messages)
    assert any("only digits" in message for message in messages)
    assert any("too common" in message for message in messages)
    assert all(error["loc"] == ["body", "password"] for error in body["errors"])


async def test_register_refuses_password_close_to_username(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/accounts/register", json=_register_body("zephyrine", "Zephyrine2024!")
    )
    body = assert_error(response, 422, "weak_password")
    assert "username or email" in body["detail"]


async def _change(
    client: httpx.AsyncClient, token: str, old: str, new: str, confirm: str | None = None
) -> httpx.Response:
    return await client.post(
        "/accounts/change-password",
        headers=bearer(token),
        json={"old_password": old, "password": new, "password_confirm": confirm or new},
    )


async def test_change_password_ends_other_sessions_only(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    other = await sign_up(client, "alice")
    current = await login_pair(client, "alice")
    response = await _change(client, current["access_token"], PASSWORD, NEW_PASSWORD)
    assert response.status_code == 204
    assert response.content == b""
    # The caller's session goes on; the other one is over.
    assert (await client.get("/users/me", headers=bearer(current["access_token"]))).is_success
    assert_error(await client.get("/users/me", headers=other.headers), 401, "invalid_token")
    # Only the new password signs in.
    await login_pair(client, "alice", NEW_PASSWORD)
    old = await client.post("/accounts/login", json={"login": "alice", "password": PASSWORD})
    assert_error(old, 401, "invalid_credentials")
    async with app_state(app).sessionmaker() as session:
        user = (await session.execute(select(User))).scalar_one()
    assert user.password_hash.startswith("$argon2id$")


async def test_change_password_needs_the_old_password(client: httpx.AsyncClient) -> None:
    account = await sign_up(client, "alice")
    response = await _change(client, account.token, "not-my-password", NEW_PASSWORD)
    assert_error(response, 403, "wrong_password")
    # Nothing changed: the old password still signs in and the session lives.
    await login_pair(client, "alice", PASSWORD)
    assert (await client.get("/users/me", headers=account.headers)).is_success


async def test_change_password_applies_the_policy(client: httpx.AsyncClient) -> None:
    account = await sign_up(client, "alice")
    response = await _change(client, account.token, PASSWORD, "password1")
    assert_error(response, 422, "weak_password")
    mismatch = await _change(client, account.token, PASSWORD, NEW_PASSWORD, "something-else-1")
    assert_error(mismatch, 422, "validation_error")
    await login_pair(client, "alice", PASSWORD)


async def test_change_password_requires_sign_in(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/accounts/change-password",
        json={"old_password": PASSWORD, "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD},
    )
    assert_error(response, 401, "not_authenticated")
