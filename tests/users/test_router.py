"""The user directory, profiles and admin changes, through the HTTP API."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.state import app_state
from app.users.models import User
from tests.support.helpers import PASSWORD, assert_error, sign_up, sign_up_admin

PUBLIC_FIELDS = {"id", "username", "date_joined"}
PRIVATE_FIELDS = {"id", "username", "email", "is_admin", "is_active", "date_joined", "last_login"}


async def test_list_users_shows_public_fields_only_in_id_order(client: httpx.AsyncClient) -> None:
    for name in ("carol", "alice", "bob"):
        await sign_up(client, name)
    response = await client.get("/users")
    assert response.status_code == 200
    body = response.json()
    assert [user["username"] for user in body["items"]] == ["carol", "alice", "bob"]
    assert all(set(user) == PUBLIC_FIELDS for user in body["items"])
    assert body["next_cursor"] is None


async def test_list_users_pages_with_cursor(client: httpx.AsyncClient) -> None:
    names = [f"user{i}" for i in range(5)]
    for name in names:
        await sign_up(client, name)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = (await client.get("/users", params=params)).json()
        seen += [user["username"] for user in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == names
    assert pages == 3


@pytest.mark.parametrize("limit", [0, -1, 201, "ten"])
async def test_list_users_refuses_bad_limit(client: httpx.AsyncClient, limit: object) -> None:
    assert_error(await client.get("/users", params={"limit": limit}), 422, "validation_error")


async def test_list_users_refuses_tampered_cursor(client: httpx.AsyncClient) -> None:
    for name in ("alice", "bob"):
        await sign_up(client, name)
    cursor = (await client.get("/users", params={"limit": 1})).json()["next_cursor"]
    for bad in (cursor[:-3], cursor[:5] + ("A" if cursor[5] != "A" else "B") + cursor[6:], "!!"):
        assert_error(await client.get("/users", params={"cursor": bad}), 422, "invalid_cursor")


async def test_cursor_from_another_listing_is_refused(client: httpx.AsyncClient) -> None:
    alice = await sign_up(client, "alice")
    for name in ("bob", "carol"):
        await sign_up(client, name)
    cursor = (await client.get("/users", params={"limit": 1})).json()["next_cursor"]
    response = await client.get(f"/users/{alice.id}/images", params={"cursor": cursor})
    assert_error(response, 422, "invalid_cursor")


async def test_get_user_hides_email_from_anonymous_and_other_users(
    client: httpx.AsyncClient,
) -> None:
    alice = await sign_up(client, "alice")
    bob = await sign_up(client, "bob")
    anonymous = (await client.get(f"/users/{alice.id}")).json()
    other = (await client.get(f"/users/{alice.id}", headers=bob.headers)).json()
    assert set(anonymous) == PUBLIC_FIELDS
    assert set(other) == PUBLIC_FIELDS
    assert anonymous["username"] == "alice"


async def test_get_user_shows_email_to_self_and_admin(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await sign_up(client, "alice")
    admin = await sign_up_admin(app, client)
    for viewer in (alice, admin):
        body = (await client.get(f"/users/{alice.id}", headers=viewer.headers)).json()
        assert set(body) == PRIVATE_FIELDS
        assert body["email"] == "alice@example.com"


@pytest.mark.parametrize("user_id", ["999", "0", "-1", "abc", str(2**63), "1" * 30])
async def test_get_missing_or_invalid_user_is_a_clean_error(
    client: httpx.AsyncClient, user_id: str
) -> None:
    response = await client.get(f"/users/{user_id}")
    if user_id == "999":
        assert_error(response, 404, "user_not_found")
    else:
        assert_error(response, 422, "validation_error")


async def test_admin_can_change_user(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await sign_up(client, "alice")
    admin = await sign_up_admin(app, client)
    response = await client.patch(
        f"/users/{alice.id}",
        headers=admin.headers,
        json={"username": "alicia", "email": "alicia@example.com", "is_admin": True},
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["username"], body["email"], body["is_admin"]) == (
        "alicia",
        "alicia@example.com",
        True,
    )
    async with app_state(app).sessionmaker() as session:
        stored = await session.get(User, alice.id)
    assert stored is not None
    assert stored.username_key == "alicia"
    assert stored.is_admin


async def test_admin_can_deactivate_user_and_their_token_dies(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await sign_up(client, "alice")
    admin = await sign_up_admin(app, client)
    response = await client.patch(
        f"/users/{alice.id}", headers=admin.headers, json={"is_active": False}
    )
    assert response.json()["is_active"] is False
    assert_error(await client.get("/users/me", headers=alice.headers), 401, "invalid_token")
    login = await client.post("/accounts/login", json={"login": "alice", "password": PASSWORD})
    assert_error(login, 401, "inactive_account")


async def test_patch_user_permissions(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await sign_up(client, "alice")
    bob = await sign_up(client, "bob")
    admin = await sign_up_admin(app, client)
    path = f"/users/{alice.id}"
    assert_error(await client.patch(path, json={"is_admin": True}), 401, "not_authenticated")
    for actor in (alice, bob):
        response = await client.patch(path, headers=actor.headers, json={"is_admin": True})
        assert_error(response, 403, "admin_required")
    missing = await client.patch("/users/999999", headers=admin.headers, json={"is_admin": True})
    assert_error(missing, 404, "user_not_found")
    async with app_state(app).sessionmaker() as session:
        stored = (await session.execute(select(User).where(User.id == alice.id))).scalar_one()
    assert stored.is_admin is False


async def test_patch_user_conflicts_and_validation(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await sign_up(client, "alice")
    await sign_up(client, "bob")
    admin = await sign_up_admin(app, client)
    path = f"/users/{alice.id}"
    taken_name = await client.patch(path, headers=admin.headers, json={"username": "BOB"})
    assert_error(taken_name, 409, "username_taken")
    taken_mail = await client.patch(path, headers=admin.headers, json={"email": "bob@example.com"})
    assert_error(taken_mail, 409, "email_taken")
    extra = await client.patch(path, headers=admin.headers, json={"password_hash": "x"})
    assert_error(extra, 422, "validation_error")
    same = await client.patch(path, headers=admin.headers, json={"username": "Alice"})
    assert same.status_code == 200
    assert same.json()["username"] == "Alice"
