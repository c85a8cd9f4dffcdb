"""Your sessions: GET /accounts/sessions lists the caller's live sessions with where each was
last used; DELETE /accounts/sessions/{id} ends one at once, and only one of the caller's own.
`last_used_at` moves on refresh and, on access, at most once per LAST_USED_PRECISION."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from jose import jwt
from sqlalchemy import select, update

from app.accounts.models import USER_AGENT_LENGTH, AccountSession
from app.accounts.sessions import LAST_USED_PRECISION, SessionClient
from app.db import utcnow
from app.state import app_state
from tests.support.helpers import ISSUED_TOKENS, PASSWORD, assert_error, bearer, sign_up
from tests.test_query_counts import count_statements

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
CURL = "curl/8.11.0"


async def _login(client: httpx.AsyncClient, login: str, user_agent: str) -> dict[str, Any]:
    response = await client.post(
        "/accounts/login",
        json={"login": login, "password": PASSWORD},
        headers={"User-Agent": user_agent},
    )
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    ISSUED_TOKENS.extend((pair["access_token"], pair["refresh_token"]))
    return pair


def _sid(pair: dict[str, Any]) -> int:
    return int(jwt.get_unverified_claims(pair["access_token"])["sid"])


async def _list(client: httpx.AsyncClient, token: str) -> list[dict[str, Any]]:
    response = await client.get("/accounts/sessions", headers=bearer(token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"items"}
    items: list[dict[str, Any]] = body["items"]
    return items


async def _stored(app: FastAPI, session_id: int) -> AccountSession | None:
    async with app_state(app).sessionmaker() as session:
        return await session.get(AccountSession, session_id)


async def _age(app: FastAPI, session_id: int, by: timedelta) -> datetime:
    """Move a session's last use into the past; the new value."""
    when = utcnow() - by
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(
            update(AccountSession).where(AccountSession.id == session_id).values(last_used_at=when)
        )
    return when


async def test_sessions_are_listed_newest_first_with_where_they_are_used(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await sign_up(client, "alice")
    laptop = await _login(client, "alice", FIREFOX)
    script = await _login(client, "alice", CURL)
    await sign_up(client, "bob")

    items = await _list(client, laptop["access_token"])
    # sign_up's own session, then the laptop's and the script's; none of Bob's.
    assert len(items) == 3
    assert [item["id"] for item in items][:2] == [_sid(script), _sid(laptop)]
    assert set(items[0]) == {
        "id",
        "created_at",
        "last_used_at",
        "expires_at",
        "user_agent",
        "ip_address",
        "current",
    }
    assert items[0]["user_agent"] == CURL
    assert items[1]["user_agent"] == FIREFOX
    assert all(item["ip_address"] == "127.0.0.1" for item in items)
    assert [item["current"] for item in items] == [False, True, False]
    for item in items:
        created = datetime.fromisoformat(item["created_at"])
        assert created <= datetime.fromisoformat(item["last_used_at"])
        assert created < datetime.fromisoformat(item["expires_at"])
    # Another token marks its own session as current.
    assert [item["current"] for item in await _list(client, script["access_token"])] == [
        True,
        False,
        False,
    ]


async def test_listing_needs_a_signed_in_user(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/accounts/sessions"), 401, "not_authenticated")


async def test_ended_and_expired_sessions_are_not_listed(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    account = await sign_up(client, "alice")
    old = await _login(client, "alice", FIREFOX)
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(
            update(AccountSession)
            .where(AccountSession.id == _sid(old))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert _sid(old) not in {item["id"] for item in await _list(client, account.token)}


async def test_deleting_a_session_ends_it_at_once(app: FastAPI, client: httpx.AsyncClient) -> None:
    account = await sign_up(client, "alice")
    stolen = await _login(client, "alice", CURL)
    response = await client.delete(f"/accounts/sessions/{_sid(stolen)}", headers=account.headers)
    assert response.status_code == 204
    assert response.content == b""
    # Its access token and its refresh token stop working now, not at expiry.
    assert_error(
        await client.get("/users/me", headers=bearer(stolen["access_token"])), 401, "invalid_token"
    )
    refreshed = await client.post(
        "/accounts/refresh", json={"refresh_token": stolen["refresh_token"]}
    )
    assert_error(refreshed, 401, "invalid_token")
    assert await _stored(app, _sid(stolen)) is None
    # The caller's own session goes on.
    assert (await client.get("/users/me", headers=account.headers)).status_code == 200


async def test_deleting_the_current_session_signs_out(client: httpx.AsyncClient) -> None:
    await sign_up(client, "alice")
    pair = await _login(client, "alice", FIREFOX)
    response = await client.delete(
        f"/accounts/sessions/{_sid(pair)}", headers=bearer(pair["access_token"])
    )
    assert response.status_code == 204
    assert_error(
        await client.get("/users/me", headers=bearer(pair["access_token"])), 401, "invalid_token"
    )


async def test_another_users_session_cannot_be_ended(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await sign_up(client, "alice")
    victim = await _login(client, "alice", FIREFOX)
    mallory = await sign_up(client, "mallory")
    response = await client.delete(f"/accounts/sessions/{_sid(victim)}", headers=mallory.headers)
    body = assert_error(response, 404, "session_not_found")
    # The same answer as for an id that does not exist: ids reveal nothing.
    unknown = await client.delete("/accounts/sessions/987654321", headers=mallory.headers)
    assert assert_error(unknown, 404, "session_not_found") == body
    assert await _stored(app, _sid(victim)) is not None
    assert (
        await client.get("/users/me", headers=bearer(victim["access_token"]))
    ).status_code == 200


@pytest.mark.parametrize("session_id", ["0", "-1", "9223372036854775808", "abc", "1.5"])
async def test_a_session_id_out_of_range_is_a_validation_error(
    client: httpx.AsyncClient, session_id: str
) -> None:
    account = await sign_up(client, "alice")
    response = await client.delete(f"/accounts/sessions/{session_id}", headers=account.headers)
    assert_error(response, 422, "validation_error")


async def test_deleting_needs_a_signed_in_user(client: httpx.AsyncClient) -> None:
    assert_error(await client.delete("/accounts/sessions/1"), 401, "not_authenticated")


async def test_refresh_records_the_last_use_and_the_client(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await sign_up(client, "alice")
    pair = await _login(client, "alice", FIREFOX)
    before = await _age(app, _sid(pair), timedelta(seconds=30))
    response = await client.post(
        "/accounts/refresh",
        json={"refresh_token": pair["refresh_token"]},
        headers={"User-Agent": CURL},
    )
    assert response.status_code == 200
    ISSUED_TOKENS.extend(response.json()[key] for key in ("access_token", "refresh_token"))
    stored = await _stored(app, _sid(pair))
    assert stored is not None
    assert stored.last_used_at > before
    assert stored.user_agent == CURL


async def test_access_writes_last_use_only_when_it_is_stale(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await sign_up(client, "alice")
    pair = await _login(client, "alice", FIREFOX)
    sid = _sid(pair)
    headers = bearer(pair["access_token"])

    # Fresh: many requests, not one write.
    with count_statements(app) as statements:
        for _ in range(5):
            assert (await client.get("/users/me", headers=headers)).status_code == 200
    assert not [sql for sql in statements if sql.lstrip().upper().startswith("UPDATE")]
    assert len(statements) == 5

    # Older than the precision: the next request records the access, once.
    stale = await _age(app, sid, LAST_USED_PRECISION + timedelta(seconds=5))
    with count_statements(app) as statements:
        for _ in range(3):
            assert (await client.get("/users/me", headers=headers)).status_code == 200
    updates = [sql for sql in statements if sql.lstrip().upper().startswith("UPDATE")]
    assert len(updates) == 1, statements
    stored = await _stored(app, sid)
    assert stored is not None
    assert stored.last_used_at > stale + LAST_USED_PRECISION

    # Just under the precision: still no write.
    await _age(app, sid, LAST_USED_PRECISION - timedelta(seconds=30))
    with count_statements(app) as statements:
        assert (await client.get("/users/me", headers=headers)).status_code == 200
    assert len(statements) == 1


async def test_a_write_request_records_a_stale_access_too(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await sign_up(client, "alice")
    pair = await _login(client, "alice", FIREFOX)
    stale = await _age(app, _sid(pair), timedelta(hours=1))
    response = await client.patch(
        "/accounts/profile", headers=bearer(pair["access_token"]), json={"username": "alice2"}
    )
    assert response.status_code == 200, response.text
    stored = await _stored(app, _sid(pair))
    assert stored is not None
    assert stored.last_used_at > stale + timedelta(minutes=59)


async def test_hostile_user_agents_are_stored_cut_and_clean(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    account = await sign_up(client, "alice")
    huge = "A" * 20_000
    pair = await _login(client, "alice", huge)
    stored = await _stored(app, _sid(pair))
    assert stored is not None
    assert stored.user_agent == "A" * USER_AGENT_LENGTH
    # Non-ASCII bytes in a header arrive as Latin-1 text; stored and shown as such.
    raw = await client.post(
        "/accounts/login",
        json={"login": "alice", "password": PASSWORD},
        headers=[(b"User-Agent", "Br\xf6wser/1.0 \u00e9".encode("latin-1"))],
    )
    assert raw.status_code == 200
    ISSUED_TOKENS.extend(raw.json()[key] for key in ("access_token", "refresh_token"))
    listed = {item["id"]: item for item in await _list(client, account.token)}
    assert listed[_sid(raw.json())]["user_agent"] == "Br\xf6wser/1.0 \u00e9"
    # No User-Agent at all is a session like any other.
    bare = await client.post(
        "/accounts/login", json={"login": "alice", "password": PASSWORD}, headers={"User-Agent": ""}
    )
    assert bare.status_code == 200
    ISSUED_TOKENS.extend(bare.json()[key] for key in ("access_token", "refresh_token"))
    async with app_state(app).sessionmaker() as session:
        agents = set((await session.execute(select(AccountSession.user_agent))).scalars())
    assert None in agents


def test_client_details_lose_control_characters_and_excess() -> None:
    client = SessionClient.from_request("evil\x00agent\r\nX-Forged: 1\x7f", "203.0.113.9")
    assert client.user_agent == "evil agent X-Forged: 1"
    assert SessionClient.from_request("\x00\x01", None) == SessionClient(None, None)
    long_address = "f" * 100
    assert SessionClient.from_request(None, long_address).ip_address == "f" * 45
