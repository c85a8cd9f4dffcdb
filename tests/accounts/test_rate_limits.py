"""Abuse limits on login, registration and reset links, in memory and in Redis; and the
client address they count per (X-Forwarded-For only from trusted proxies)."""

from __future__ import annotations

import ipaddress
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import func, select

from app.main import create_app
from app.ops.proxies import client_address
from app.state import app_state
from app.users.models import User
from tests.conftest import empty_tables, make_settings
from tests.support.helpers import PASSWORD, assert_error, sign_up
from tests.support.mail_server import free_port

REDIS_URL = "redis://127.0.0.1:6379/0"
WRONG_PASSWORD = "wrong-password-1"
# The test client's peer address (httpx's ASGITransport default).
PROXY = "127.0.0.0/8"
# Addresses only ever written into a header; no traffic goes to them.
CLIENT_A = "198.51.100.7"
CLIENT_B = "198.51.100.8"


@pytest.fixture(params=["memory", "redis"])
def limit_storage(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings_overrides(limit_storage: str) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "rate_limit_enabled": True,
        "rate_limit_login_per_account": "3/minute",
        "rate_limit_login_per_address": "5/minute",
        "rate_limit_register_per_address": "2/hour",
        "rate_limit_reset_per_address": "2/hour",
        "trusted_proxies": PROXY,
    }
    if limit_storage == "redis":
        # A prefix of its own per test, removed afterwards, so runs never see each other.
        overrides["redis_url"] = REDIS_URL
        overrides["rate_limit_key_prefix"] = f"gallery-test-{uuid.uuid4().hex}"
    return overrides


@pytest.fixture(autouse=True)
async def _forget_counts(app: FastAPI, limit_storage: str) -> AsyncIterator[None]:
    yield
    # In-memory counts go with the app; Redis keys under this test's prefix are removed.
    if limit_storage == "redis":
        await app_state(app).rate_limiter.reset()


async def _register(client: httpx.AsyncClient, username: str) -> None:
    """Create an account without signing in (a sign-in would count against the limit)."""
    response = await client.post(
        "/accounts/register",
        json={
            "username": username,
            "email": f"{username}@example.com",
            "password": PASSWORD,
            "password_confirm": PASSWORD,
        },
    )
    assert response.status_code == 201, response.text


def _from(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def _login(
    client: httpx.AsyncClient,
    login: str,
    password: str = WRONG_PASSWORD,
    address: str = CLIENT_A,
) -> httpx.Response:
    return await client.post(
        "/accounts/login", json={"login": login, "password": password}, headers=_from(address)
    )


def _count_verifications(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record each password verification the app performs (real work, just counted)."""
    hasher = app_state(app).password_hasher
    original = hasher.verify
    calls: list[int] = []

    async def counting(password: str, stored_hash: str) -> tuple[bool, str | None]:
        calls.append(1)
        result: tuple[bool, str | None] = await original(password, stored_hash)
        return result

    monkeypatch.setattr(hasher, "verify", counting)
    return calls


def _assert_limited(response: httpx.Response) -> None:
    body = assert_error(response, 429, "rate_limited")
    assert set(body) == {"detail", "code"}
    retry_after = int(response.headers["retry-after"])
    assert 0 < retry_after <= 60 * 60


async def test_login_is_limited_per_account_before_any_hashing(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _register(client, "alice")
    verifications = _count_verifications(app, monkeypatch)
    for address in (CLIENT_A, CLIENT_B, CLIENT_A):
        assert_error(await _login(client, "alice", address=address), 401, "invalid_credentials")
    assert len(verifications) == 3
    # The fourth attempt, even from another address and with the right password, is refused
    # without verifying anything.
    limited = await _login(client, "alice", PASSWORD, address=CLIENT_B)
    _assert_limited(limited)
    assert int(limited.headers["retry-after"]) <= 60
    assert len(verifications) == 3
    # The email is the same account.
    _assert_limited(await _login(client, "alice@example.com", PASSWORD, address=CLIENT_B))
    # Other accounts are not affected.
    await sign_up(client, "bob")


async def test_unknown_accounts_are_limited_like_known_ones(client: httpx.AsyncClient) -> None:
    await _register(client, "alice")
    known = [await _login(client, "alice", address=CLIENT_A) for _ in range(4)]
    unknown = [await _login(client, "nobody", address=CLIENT_B) for _ in range(4)]
    assert [r.status_code for r in known] == [r.status_code for r in unknown] == [401] * 3 + [429]
    assert known[-1].json() == unknown[-1].json()


async def test_a_limited_unknown_login_is_not_written_to_the_log(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """People type their password into the login field: a login that matches no account
    never appears in a log line, even when its limit trips."""
    typed = "Tr0ub4dor&3-typed-in-the-wrong-field"
    with caplog.at_level(logging.INFO, logger="app.rate_limits"):
        responses = [await _login(client, typed, address=CLIENT_B) for _ in range(4)]
    assert responses[-1].status_code == 429
    assert "rate limit login_account reached for login:#" in caplog.text
    assert typed.lower() not in caplog.text.lower()


async def test_login_is_limited_per_address(client: httpx.AsyncClient) -> None:
    for number in range(5):
        assert_error(await _login(client, f"user{number}"), 401, "invalid_credentials")
    _assert_limited(await _login(client, "user-next"))
    # Another client behind the same trusted proxy is counted on its own.
    assert_error(await _login(client, "user-next", address=CLIENT_B), 401, "invalid_credentials")


async def test_registration_is_limited_per_address(app: FastAPI, client: httpx.AsyncClient) -> None:
    def body(username: str) -> dict[str, str]:
        return {
            "username": username,
            "email": f"{username}@example.com",
            "password": PASSWORD,
            "password_confirm": PASSWORD,
        }

    for username in ("alice", "bob"):
        response = await client.post(
            "/accounts/register", json=body(username), headers=_from(CLIENT_A)
        )
        assert response.status_code == 201
    limited = await client.post("/accounts/register", json=body("carol"), headers=_from(CLIENT_A))
    _assert_limited(limited)
    async with app_state(app).sessionmaker() as session:
        assert (await session.execute(select(func.count()).select_from(User))).scalar_one() == 2
    other = await client.post("/accounts/register", json=body("carol"), headers=_from(CLIENT_B))
    assert other.status_code == 201


async def test_reset_links_are_limited_per_address(client: httpx.AsyncClient) -> None:
    for login in ("alice", "nobody"):
        response = await client.post(
            "/accounts/send-reset-password-link", json={"login": login}, headers=_from(CLIENT_A)
        )
        assert response.status_code == 202
    limited = await client.post(
        "/accounts/send-reset-password-link", json={"login": "carol"}, headers=_from(CLIENT_A)
    )
    _assert_limited(limited)


async def test_forwarded_for_from_untrusted_peer_is_ignored(
    database_url: str, settings_overrides: dict[str, Any]
) -> None:
    settings = make_settings(database_url, **{**settings_overrides, "trusted_proxies": ""})
    application = create_app(settings)
    async with LifespanManager(application):
        try:
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                # Rotating the header does not give a fresh count: the peer is what counts.
                for number in range(5):
                    response = await _login(client, f"user{number}", address=f"192.0.2.{number}")
                    assert_error(response, 401, "invalid_credentials")
                _assert_limited(await _login(client, "user-next", address="192.0.2.99"))
        finally:
            if "redis_url" in settings_overrides:
                await app_state(application).rate_limiter.reset()


async def test_redis_counts_are_shared_between_processes(
    app: FastAPI, client: httpx.AsyncClient, database_url: str, settings_overrides: dict[str, Any]
) -> None:
    if "redis_url" not in settings_overrides:
        pytest.skip("in-memory counts are per process by design")
    # A second app with the same settings stands for another worker or replica.
    other = create_app(make_settings(database_url, **settings_overrides))
    async with LifespanManager(other):
        transport = httpx.ASGITransport(app=other)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as other_client:
            for number in range(3):
                await _login(client, f"user{number}")
            for number in range(3, 5):
                await _login(other_client, f"user{number}")
            _assert_limited(await _login(client, "user-next"))
            _assert_limited(await _login(other_client, "user-next"))


def _networks(*cidrs: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(cidr) for cidr in cidrs]


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("10.0.0.1", None, [], "10.0.0.1"),
        ("10.0.0.1", "203.0.113.9", [], "10.0.0.1"),
        ("10.0.0.1", "203.0.113.9", ["10.0.0.0/8"], "203.0.113.9"),
        ("10.0.0.1", "203.0.113.9", ["192.168.0.0/16"], "10.0.0.1"),
        # A client cannot spoof its way past our proxies: read from the right.
        ("10.0.0.1", "1.1.1.1, 203.0.113.9, 10.0.0.2", ["10.0.0.0/8"], "203.0.113.9"),
        ("10.0.0.1", "10.0.0.3, 10.0.0.2", ["10.0.0.0/8"], "10.0.0.3"),
        ("10.0.0.1", "not-an-ip", ["10.0.0.0/8"], "10.0.0.1"),
        ("10.0.0.1", "203.0.113.9, garbage", ["10.0.0.0/8"], "10.0.0.1"),
        ("::1", "2001:db8::5", ["::1/128"], "2001:db8::5"),
        (None, "203.0.113.9", ["10.0.0.0/8"], "unknown"),
    ],
)
def test_client_address_believes_forwarded_for_only_from_trusted_proxies(
    peer: str | None, forwarded: str | None, trusted: list[str], expected: str
) -> None:
    assert client_address(peer, forwarded, _networks(*trusted)) == expected


async def test_unreachable_redis_lets_requests_through_and_logs(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        database_url,
        rate_limit_enabled=True,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    application = create_app(settings)
    try:
        async with LifespanManager(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                with caplog.at_level(logging.ERROR, logger="app.rate_limits"):
                    await sign_up(client, "alice")
                    response = await _login(client, "alice", PASSWORD)
        assert response.status_code == 200
        assert "rate limit store failed" in caplog.text
    finally:
        await empty_tables(database_url)
