"""Helpers that act as a user would: through the HTTP API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from app.accounts.security import PasswordHasher
from app.accounts.service import create_user
from app.state import app_state

PASSWORD = "a-long-enough-passphrase"
# Every token the tests were given: the log check at the end of the run looks for each.
ISSUED_TOKENS: list[str] = []


@dataclass
class Account:
    id: int
    username: str
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def login_pair(
    client: httpx.AsyncClient, login: str, password: str = PASSWORD
) -> dict[str, Any]:
    """Sign in; the whole answer: access_token, token_type, expires_in, refresh_token."""
    response = await client.post("/accounts/login", json={"login": login, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    ISSUED_TOKENS.extend(body[key] for key in ("access_token", "refresh_token") if key in body)
    return body


async def login(client: httpx.AsyncClient, login: str, password: str = PASSWORD) -> str:
    token: str = (await login_pair(client, login, password))["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def registration(username: str) -> dict[str, str]:
    """The body of `POST /accounts/register` for `username` at example.com."""
    return {
        "username": username,
        "email": f"{username}@example.com",
        "password": PASSWORD,
        "password_confirm": PASSWORD,
    }


async def register(client: httpx.AsyncClient, username: str) -> int:
    """Register through the API (no sign-in); the new account's id."""
    response = await client.post("/accounts/register", json=registration(username))
    assert response.status_code == 201, response.text
    user_id: int = response.json()["id"]
    return user_id


async def sign_up(client: httpx.AsyncClient, username: str) -> Account:
    """Register through the API and sign in."""
    user_id = await register(client, username)
    return Account(user_id, username, f"{username}@example.com", await login(client, username))


async def sign_up_admin(app: FastAPI, client: httpx.AsyncClient, username: str = "root") -> Account:
    """Create an admin the way the start-up bootstrap does, then sign in through the API."""
    async with app_state(app).sessionmaker() as session, session.begin():
        hasher: PasswordHasher = app_state(app).password_hasher
        user = await create_user(
            session,
            hasher,
            username=username,
            email=f"{username}@example.com",
            password=PASSWORD,
            is_admin=True,
        )
        user_id = user.id
    return Account(user_id, username, f"{username}@example.com", await login(client, username))


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the documented error: status, JSON body with `detail` and `code`."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body
