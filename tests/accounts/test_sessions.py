"""Sessions through the HTTP API: token pairs, refresh rotation and reuse, logout, and the
access-token checks (tampering, expiry, audience, type, revoked sessions)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from jose import jwt
from sqlalchemy import event, select, update

from app.accounts.models import AccountSession, RefreshToken
from app.accounts.security import CLOCK_SKEW_SECONDS
from app.db import utcnow
from app.main import create_app
from app.state import app_state
from app.users.models import User
from tests.conftest import TEST_SECRET, empty_tables, make_settings
from tests.support.helpers import assert_error, bearer, login_pair, sign_up


async def _me(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/users/me", headers=bearer(token))


async def _refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await client.post("/accounts/refresh", json={"refresh_token": refresh_token})


async def _sessions(app: FastAPI, user_id: int) -> list[AccountSession]:
    async with app_state(app).sessionmaker() as session:
        query = select(AccountSession).where(AccountSession.user_id == user_id)
        return list((await session.execute(query)).scalars())


async def test_login_returns_token_pair_and_stores_only_a_hash(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    account = await sign_up(client, "alice")
    pair = await login_pair(client, "alice")
    assert set(pair) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert pair["token_type"] == "bearer"
    assert pair["expires_in"] == 15 * 60
    assert len(pair["refresh_token"]) >= 40
    claims = jwt.get_unverified_claims(pair["access_token"])
    assert claims["sub"] == str(account.id)
    assert claims["type"] == "access"
    assert {"exp", "iat", "sid", "iss", "aud"} <= set(claims)
    # sign_up signed in once, this is the second session.
    sessions = await _sessions(app, account.id)
    assert len(sessions) == 2
    assert int(claims["sid"]) in {item.id for item in sessions}
    async with app_state(app).sessionmaker() as session:
        hashes = list((await session.execute(select(RefreshToken.token_hash))).scalars())
    assert pair["refresh_token"] not in hashes
    assert hashlib.sha256(pair["refresh_token"].encode()).hexdigest() in hashes


async def test_refresh_rotates_the_pair(app: FastAPI, client: httpx.AsyncClient) -> None:
    await sign_up(client, "alice")
    pair = await login_pair(client, "alice")
    response = await _refresh(client, pair["refresh_token"])
    assert response.status_code == 200, response.text
    new = response.json()
    assert new["refresh_token"] != pair["refresh_token"]
    assert new["token_type"] == "bearer"
    assert (await _me(client, new["access_token"])).json()["username"] == "alice"
    # The same session goes on.
    old_sid = jwt.get_unverified_claims(pair["access_token"])["sid"]
    assert jwt.get_unverified_claims(new["access_token"])["sid"] == old_sid
    # The new refresh token works in turn.
    assert (await _refresh(client, new["refresh_token"])).status_code == 200


async def test_reused_refresh_token_revokes_the_whole_session(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    account = await sign_up(client, "alice")
    pair = await login_pair(client, "alice")
    sid = int(jwt.get_unverified_claims(pair["access_token"])["sid"])
    new = (await _refresh(client, pair["refresh_token"])).json()

    reuse = await _refresh(client, pair["refresh_token"])
    assert_error(reuse, 401, "invalid_token")
    # Both the thief's and the owner's tokens of that session are dead.
    assert_error(await _refresh(client, new["refresh_token"]), 401, "invalid_token")
    assert_error(await _me(client, new["access_token"]), 401, "invalid_token")
    assert_error(await _me(client, pair["access_token"]), 401, "invalid_token")
    assert sid not in {item.id for item in await _sessions(app, account.id)}
    # Another session of the same user is untouched.
    assert (await _me(client, account.token)).status_code == 200


@pytest.mark.parametrize("token", ["", "x", "not-a-real-refresh-token" * 2])
async def test_unknown_refresh_token_is_refused(client: httpx.AsyncClient, token: str) -> None:
    response = await _refresh(client, token)
    if token:
        assert_error(response, 401, "invalid_token")
    else:
        assert_error(response, 422, "validation_error")


async def test_access_token_is_not_a_refresh_token(client: httpx.AsyncClient) -> None:
    await sign_up(client, "alice")
    pair = await login_pair(client, "alice")
    assert_error(await _refresh(client, pair["access_token"]), 401, "invalid_token")
    assert_error(await _me(client, pair["refresh_token"]), 401, "invalid_token")


async def test_expired_refresh_token_is_refused(app: FastAPI, client: httpx.AsyncClient) -> None:
    await sign_up(client, "alice")
    pair = await login_pair(client, "alice")
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(update(RefreshToken).values(expires_at=utcnow() - timedelta(1)))
    assert_error(await _refresh(client, pair["refresh_token"]), 401, "invalid_token")


async def test_deactivated_user_cannot_refresh(app: FastAPI, client: httpx.AsyncClient) -> None:
    await sign_up(client, "alice")
    pair = await login_pair(client, "alice")
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(update(User).values(is_active=False))
    assert_error(await _refresh(client, pair["refresh_token"]), 401, "invalid_token")


async def test_logout_ends_the_current_session_at_once(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    account = await sign_up(client, "alice")
    pair = await login_pair(client, "alice")
    response = await client.post("/accounts/logout", headers=bearer(pair["access_token"]))
    assert response.status_code == 204
    assert response.content == b""
    assert_error(await _me(client, pair["access_token"]), 401, "invalid_token")
    assert_error(await _refresh(client, pair["refresh_token"]), 401, "invalid_token")
    # The other session (from sign_up) still works.
    assert (await _me(client, account.token)).status_code == 200
    assert len(await _sessions(app, account.id)) == 1


async def test_logout_requires_a_token(client: httpx.AsyncClient) -> None:
    assert_error(await client.post("/accounts/logout"), 401, "not_authenticated")
    assert_error(await client.post("/accounts/logout-all"), 401, "not_authenticated")


async def test_logout_all_ends_every_session_of_the_user_only(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await sign_up(client, "alice")
    bob = await sign_up(client, "bob")
    second = await login_pair(client, "alice")
    response = await client.post("/accounts/logout-all", headers=alice.headers)
    assert response.status_code == 204
    for token in (alice.token, second["access_token"]):
        assert_error(await _me(client, token), 401, "invalid_token")
    assert_error(await _refresh(client, second["refresh_token"]), 401, "invalid_token")
    assert await _sessions(app, alice.id) == []
    assert (await _me(client, bob.token)).status_code == 200


@contextmanager
def _count_queries(app: FastAPI) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(str(args[2]))

    engine = app_state(app).engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_authentication_costs_one_query(app: FastAPI, client: httpx.AsyncClient) -> None:
    account = await sign_up(client, "alice")
    with _count_queries(app) as statements:
        response = await _me(client, account.token)
    assert response.status_code == 200
    selects = [item for item in statements if item.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1, statements
    assert "account_sessions" in selects[0]


# --- Access-token tampering -------------------------------------------------------------


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims_for(token: str, **changes: Any) -> dict[str, Any]:
    claims = dict(jwt.get_unverified_claims(token))
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def _sign(claims: dict[str, Any], key: str = TEST_SECRET, algorithm: str = "HS256") -> str:
    return str(jwt.encode(claims, key, algorithm=algorithm))


def _tampered_tokens(token: str) -> dict[str, str]:
    now = int(time.time())
    return {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims_for(token))}.",
        "other key": _sign(_claims_for(token), key="another-key-that-is-long-enough-000000"),
        "other algorithm": _sign(_claims_for(token), algorithm="HS512"),
        "expired": _sign(_claims_for(token, iat=now - 7200, exp=now - 3600)),
        "no exp": _sign(_claims_for(token, exp=None)),
        "no iat": _sign(_claims_for(token, iat=None)),
        "no sub": _sign(_claims_for(token, sub=None)),
        "no sid": _sign(_claims_for(token, sid=None)),
        "no type": _sign(_claims_for(token, type=None)),
        "future nbf": _sign(_claims_for(token, nbf=now + 3600)),
        "future iat": _sign(_claims_for(token, iat=now + 3600)),
        "wrong audience": _sign(_claims_for(token, aud="another-service")),
        "no audience": _sign(_claims_for(token, aud=None)),
        "wrong issuer": _sign(_claims_for(token, iss="someone-else")),
        "refresh type": _sign(_claims_for(token, type="refresh")),
        "other sid": _sign(_claims_for(token, sid="999999")),
        "non-numeric sub": _sign(_claims_for(token, sub="alice")),
        "truncated": token[:-4],
    }


@pytest.mark.parametrize(
    "case",
    [
        "alg none",
        "other key",
        "other algorithm",
        "expired",
        "no exp",
        "no iat",
        "no sub",
        "no sid",
        "no type",
        "future nbf",
        "future iat",
        "wrong audience",
        "no audience",
        "wrong issuer",
        "refresh type",
        "other sid",
        "non-numeric sub",
        "truncated",
    ],
)
async def test_tampered_access_token_is_refused(client: httpx.AsyncClient, case: str) -> None:
    account = await sign_up(client, "alice")
    # The untampered re-signed token works, so each refusal is down to the one change.
    assert (await _me(client, _sign(_claims_for(account.token)))).status_code == 200
    response = await _me(client, _tampered_tokens(account.token)[case])
    assert_error(response, 401, "invalid_token")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_remembered_token_still_expires(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verified tokens are remembered to skip re-checking their signature; their expiry
    (plus the allowed clock skew) still ends them."""
    account = await sign_up(client, "alice")
    assert (await _me(client, account.token)).status_code == 200  # now remembered
    expires_at = jwt.get_unverified_claims(account.token)["exp"]
    monkeypatch.setattr(time, "time", lambda: expires_at + CLOCK_SKEW_SECONDS - 1)
    assert (await _me(client, account.token)).status_code == 200
    monkeypatch.setattr(time, "time", lambda: expires_at + CLOCK_SKEW_SECONDS + 1)
    assert_error(await _me(client, account.token), 401, "invalid_token")


async def test_remembered_token_ends_at_logout(client: httpx.AsyncClient) -> None:
    account = await sign_up(client, "alice")
    for _ in range(2):
        assert (await _me(client, account.token)).status_code == 200
    assert (await client.post("/accounts/logout", headers=bearer(account.token))).status_code in (
        200,
        204,
    )
    assert_error(await _me(client, account.token), 401, "invalid_token")


async def test_token_naming_another_users_session_is_refused(client: httpx.AsyncClient) -> None:
    alice = await sign_up(client, "alice")
    bob = await sign_up(client, "bob")
    bob_sid = jwt.get_unverified_claims(bob.token)["sid"]
    forged = _sign(_claims_for(alice.token, sid=bob_sid))
    assert_error(await _me(client, forged), 401, "invalid_token")


async def test_token_of_deleted_user_is_refused(app: FastAPI, client: httpx.AsyncClient) -> None:
    account = await sign_up(client, "alice")
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.delete(await session.get(User, account.id))
    assert_error(await _me(client, account.token), 401, "invalid_token")


async def test_generated_development_key_keeps_tokens_valid_across_restarts(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL keeps the generated key in the working directory: make that a temporary one.
    monkeypatch.chdir(tmp_path)
    settings = make_settings(database_url, secret_key=None, environment="development")
    try:
        first = create_app(settings)
        async with LifespanManager(first):
            transport = httpx.ASGITransport(app=first)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                account = await sign_up(client, "alice")
        second = create_app(settings)
        async with LifespanManager(second):
            transport = httpx.ASGITransport(app=second)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                response = await _me(client, account.token)
        assert response.status_code == 200
        assert response.json()["username"] == "alice"
    finally:
        await empty_tables(database_url)


async def test_concurrent_refreshes_with_one_token_never_both_succeed(
    client: httpx.AsyncClient,
) -> None:
    await sign_up(client, "alice")
    pair = await login_pair(client, "alice")
    first, second = await asyncio.gather(
        _refresh(client, pair["refresh_token"]), _refresh(client, pair["refresh_token"])
    )
    statuses = sorted([first.status_code, second.status_code])
    # One wins. The other is a reuse (401, session ended) or, on SQLite, whose single writer
    # refuses a stale snapshot, a retryable 503; never a second new pair.
    assert statuses[0] == 200, statuses
    assert statuses[1] in {401, 503}, statuses
