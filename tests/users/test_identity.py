"""Usernames that look alike collide (the TR39 confusable skeleton of the folded name), and a
name whose key would not fit its column is a 422, never a 500: at registration, in one's
profile and in an admin's change."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.state import app_state
from app.users.models import User
from tests.support.helpers import PASSWORD, Account, assert_error, sign_up, sign_up_admin

CYRILLIC_ROOT = "r\u043e\u043et"  # r, two Cyrillic o, t
LOOK_ALIKES = [
    CYRILLIC_ROOT,
    "ROOT",
    "r00t",  # TR39 puts 0 with o
    "r\u03bfot",  # Greek omicron
    "\uff52\uff4f\uff4f\uff54",  # fullwidth letters
]
# 76 sharp s: 76 characters (valid), 152 once case-folded (`ss`), over the 150 of the column.
LONG_FOLDING_NAME = "\u00df" * 76


def _register_body(username: str, email: str) -> dict[str, Any]:
    return {
        "username": username,
        "email": email,
        "password": PASSWORD,
        "password_confirm": PASSWORD,
    }


async def _user_count(app: FastAPI) -> int:
    async with app_state(app).sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(User))).scalar_one())


@pytest.mark.parametrize("name", LOOK_ALIKES)
async def test_look_alike_username_is_taken_at_registration(
    app: FastAPI, client: httpx.AsyncClient, name: str
) -> None:
    await sign_up(client, "root")
    response = await client.post(
        "/accounts/register", json=_register_body(name, "mallory@example.net")
    )
    assert_error(response, 409, "username_taken")
    assert await _user_count(app) == 1


async def test_look_alike_username_is_taken_in_profile_and_admin_changes(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await sign_up_admin(app, client, "admin")
    mallory = await sign_up(client, "mallory")
    renamed = await client.patch(
        "/accounts/profile", headers=mallory.headers, json={"username": "\u0430dmin"}
    )
    assert_error(renamed, 409, "username_taken")
    by_admin = await client.patch(
        f"/users/{mallory.id}", headers=admin.headers, json={"username": "\u0430dm\u0456n"}
    )
    assert_error(by_admin, 409, "username_taken")
    async with app_state(app).sessionmaker() as session:
        stored = (await session.execute(select(User).where(User.id == mallory.id))).scalar_one()
    assert stored.username == "mallory"


async def test_distinct_names_are_still_distinct(client: httpx.AsyncClient) -> None:
    for name in ("root", "roots", "rot", "r.oot", "alice", "\u00e9lise", "elise"):
        await sign_up(client, name)


async def test_look_alike_name_signs_in_to_nobody_else(client: httpx.AsyncClient) -> None:
    await sign_up(client, "root")
    # Typing the look-alike finds the real account, whose password it does not have.
    response = await client.post(
        "/accounts/login", json={"login": CYRILLIC_ROOT, "password": "not-roots-password"}
    )
    assert_error(response, 401, "invalid_credentials")


async def _register_long(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post(
        "/accounts/register", json=_register_body(LONG_FOLDING_NAME, "long@example.com")
    )


async def test_name_whose_key_is_too_long_is_refused_at_registration(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    body = assert_error(await _register_long(client), 422, "validation_error")
    assert body["errors"][0]["loc"] == ["body", "username"]
    assert await _user_count(app) == 0


async def test_name_whose_key_is_too_long_is_refused_in_profile_and_admin_changes(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin: Account = await sign_up_admin(app, client, "admin")
    alice = await sign_up(client, "alice")
    own = await client.patch(
        "/accounts/profile", headers=alice.headers, json={"username": LONG_FOLDING_NAME}
    )
    assert_error(own, 422, "validation_error")
    by_admin = await client.patch(
        f"/users/{alice.id}", headers=admin.headers, json={"username": LONG_FOLDING_NAME}
    )
    assert_error(by_admin, 422, "validation_error")
    # 75 of them fit (150 once folded).
    fits = await client.patch(
        "/accounts/profile", headers=alice.headers, json={"username": "\u00df" * 75}
    )
    assert fits.status_code == 200, fits.text
