"""Registering, signing in and the caller's profile, through the HTTP API."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.state import app_state
from app.users.models import User
from tests.support.helpers import PASSWORD, assert_error, login, sign_up


def _register_body(username: str = "alice", **overrides: str) -> dict[str, str]:
    body = {
        "username": username,
        "email": f"{username}@example.com",
        "password": PASSWORD,
        "password_confirm": PASSWORD,
    }
    body.update(overrides)
    return body


async def _user_count(app: FastAPI) -> int:
    async with app_state(app).sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(User))).scalar_one())


async def test_register_creates_user_and_hashes_password(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    response = await client.post("/accounts/register", json=_register_body())
    assert response.status_code == 201
    body = response.json()
    assert body["username"] == "alice"
    assert body["email"] == "alice@example.com"
    assert body["is_admin"] is False
    assert body["date_joined"].endswith("Z") or "+00:00" in body["date_joined"]
    assert "password" not in body
    assert "password_hash" not in body
    async with app_state(app).sessionmaker() as session:
        user = (await session.execute(select(User))).scalar_one()
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash


async def test_register_with_trailing_slash_is_answered_without_redirect(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/accounts/register/", json=_register_body())
    assert response.status_code == 201
    assert response.json()["username"] == "alice"


async def test_register_refuses_taken_username_case_insensitively(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await sign_up(client, "alice")
    response = await client.post(
        "/accounts/register", json=_register_body("ALICE", email="other@example.com")
    )
    assert_error(response, 409, "username_taken")
    assert await _user_count(app) == 1


async def test_register_refuses_lookalike_username_by_unicode_normalisation(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await sign_up(client, "alice")
    # Fullwidth letters are NFKC-equivalent to ASCII ones.
    response = await client.post(
        "/accounts/register",
        json=_register_body("\uff41\uff4c\uff49\uff43\uff45", email="x@example.com"),
    )
    assert_error(response, 409, "username_taken")
    assert await _user_count(app) == 1


async def test_register_refuses_taken_email_case_insensitively(client: httpx.AsyncClient) -> None:
    await sign_up(client, "alice")
    response = await client.post(
        "/accounts/register", json=_register_body("bob", email="ALICE@example.com")
    )
    assert_error(response, 409, "email_taken")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"password": "short1", "password_confirm": "short1"}, "at least 8"),
        ({"password": "1234567890", "password_confirm": "1234567890"}, "only digits"),
        (
            {"password": "alicealice", "password_confirm": "alicealice", "username": "alicealice"},
            "same as the username",
        ),
    ],
)
async def test_register_refuses_weak_passwords(
    app: FastAPI, client: httpx.AsyncClient, overrides: dict[str, str], fragment: str
) -> None:
    body = _register_body(**overrides)
    body["email"] = f"{body['username']}@example.com"
    response = await client.post("/accounts/register", json=body)
    error = assert_error(response, 422, "weak_password")
    assert fragment in error["detail"]
    assert error["errors"]
    assert await _user_count(app) == 0


async def test_register_refuses_password_equal_to_email(client: httpx.AsyncClient) -> None:
    body = _register_body(password="alice@example.com", password_confirm="alice@example.com")
    assert_error(await client.post("/accounts/register", json=body), 422, "weak_password")


async def test_register_refuses_mismatched_confirmation(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        "/accounts/register", json=_register_body(password_confirm="something-else-entirely")
    )
    body = assert_error(response, 422, "validation_error")
    assert "password_confirm" in body["detail"]
    assert await _user_count(app) == 0


@pytest.mark.parametrize("field", ["id", "is_admin", "is_active", "date_joined"])
async def test_register_refuses_mass_assignment(
    app: FastAPI, client: httpx.AsyncClient, field: str
) -> None:
    body: dict[str, object] = {**_register_body(), field: True}
    response = await client.post("/accounts/register", json=body)
    error = assert_error(response, 422, "validation_error")
    assert error["errors"][0]["loc"] == ["body", field]
    assert await _user_count(app) == 0


@pytest.mark.parametrize("username", ["ab", "x" * 151, "has space", "semi;colon", "slash/name"])
async def test_register_refuses_invalid_usernames(client: httpx.AsyncClient, username: str) -> None:
    body = _register_body(username)
    body["email"] = "valid@example.com"
    assert_error(await client.post("/accounts/register", json=body), 422, "validation_error")


async def test_register_refuses_invalid_email(client: httpx.AsyncClient) -> None:
    body = _register_body(email="not-an-email")
    assert_error(await client.post("/accounts/register", json=body), 422, "validation_error")


async def test_login_with_username_or_email_returns_bearer_token(
    client: httpx.AsyncClient,
) -> None:
    await sign_up(client, "alice")
    for login_name in ("alice", "ALICE", "alice@example.com", "Alice@Example.com"):
        response = await client.post(
            "/accounts/login", json={"login": login_name, "password": PASSWORD}
        )
        assert response.status_code == 200, login_name
        body = response.json()
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 15 * 60
        me = await client.get(
            "/users/me", headers={"Authorization": f"Bearer {body['access_token']}"}
        )
        assert me.json()["username"] == "alice"


async def test_login_accepts_oauth2_password_form(client: httpx.AsyncClient) -> None:
    await sign_up(client, "alice")
    response = await client.post(
        "/accounts/login", data={"username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 200
    assert response.json()["token_type"] == "bearer"


async def test_login_updates_last_login(client: httpx.AsyncClient) -> None:
    account = await sign_up(client, "alice")
    profile = (await client.get("/accounts/profile", headers=account.headers)).json()
    assert profile["last_login"] is not None


async def test_login_gives_same_answer_for_unknown_user_and_wrong_password(
    client: httpx.AsyncClient,
) -> None:
    await sign_up(client, "alice")
    wrong = await client.post("/accounts/login", json={"login": "alice", "password": "nope-nope"})
    unknown = await client.post("/accounts/login", json={"login": "nobody", "password": "nope"})
    for response in (wrong, unknown):
        assert_error(response, 401, "invalid_credentials")
        assert response.headers["www-authenticate"] == "Bearer"
    assert wrong.json() == unknown.json()


async def test_login_refuses_deactivated_account(app: FastAPI, client: httpx.AsyncClient) -> None:
    await sign_up(client, "alice")
    async with app_state(app).sessionmaker() as session, session.begin():
        user = (await session.execute(select(User))).scalar_one()
        user.is_active = False
    response = await client.post("/accounts/login", json={"login": "alice", "password": PASSWORD})
    assert_error(response, 401, "inactive_account")


@pytest.mark.parametrize(
    "body", [b"{not json", b"[1, 2]", b'"a string"', b'{"login": 5, "password": []}', b"{}"]
)
async def test_login_refuses_malformed_bodies(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post(
        "/accounts/login", content=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 422, "validation_error")


async def test_profile_shows_own_private_fields(client: httpx.AsyncClient) -> None:
    account = await sign_up(client, "alice")
    for path in ("/accounts/profile", "/users/me"):
        response = await client.get(path, headers=account.headers)
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {
            "id",
            "username",
            "email",
            "is_admin",
            "is_active",
            "date_joined",
            "last_login",
        }
        assert body["email"] == "alice@example.com"
        assert body["is_active"] is True


@pytest.mark.parametrize("path", ["/accounts/profile", "/users/me"])
async def test_profile_requires_token(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert_error(response, 401, "not_authenticated")
    assert response.headers["www-authenticate"] == "Bearer"
    bad = await client.get(path, headers={"Authorization": "Bearer not-a-jwt"})
    assert_error(bad, 401, "invalid_token")


async def test_deactivated_users_token_stops_working(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    account = await sign_up(client, "alice")
    async with app_state(app).sessionmaker() as session, session.begin():
        user = await session.get(User, account.id)
        assert user is not None
        user.is_active = False
    assert_error(await client.get("/users/me", headers=account.headers), 401, "invalid_token")


async def test_deleted_users_token_stops_working(app: FastAPI, client: httpx.AsyncClient) -> None:
    account = await sign_up(client, "alice")
    async with app_state(app).sessionmaker() as session, session.begin():
        user = await session.get(User, account.id)
        await session.delete(user)
    assert_error(await client.get("/users/me", headers=account.headers), 401, "invalid_token")


async def test_token_from_login_helper_round_trips(client: httpx.AsyncClient) -> None:
    await sign_up(client, "alice")
    token = await login(client, "alice@example.com")
    me = await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["username"] == "alice"


async def test_username_cannot_be_another_users_email(client: httpx.AsyncClient) -> None:
    victim = await sign_up(client, "victim")
    taken = await client.post(
        "/accounts/register",
        json=_register_body("Victim@Example.com", email="mallory@example.com"),
    )
    assert_error(taken, 409, "username_taken")
    # The victim still signs in with their email.
    assert await login(client, victim.email)


async def test_email_cannot_be_another_users_username(client: httpx.AsyncClient) -> None:
    first = await client.post(
        "/accounts/register", json=_register_body("carol@example.org", email="c@example.com")
    )
    assert first.status_code == 201, first.text
    response = await client.post(
        "/accounts/register", json=_register_body("mallory", email="Carol@example.org")
    )
    assert_error(response, 409, "email_taken")
