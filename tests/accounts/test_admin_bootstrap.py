"""The admin bootstrap never promotes a stranger: a name or an email registered by someone
else before the operator set ADMIN_USERNAME/ADMIN_EMAIL stops the start-up, naming the
conflict, and nobody becomes admin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select

from app.accounts.service import AdminBootstrapConflict
from app.main import create_app
from app.state import app_state
from app.users.models import User
from tests.conftest import make_settings, migrate, new_database
from tests.support.helpers import PASSWORD, login
from tests.support.live_server import ROOT, TEST_SECRET, live_server

ADMIN_PASSWORD = "first-admin-password"


async def _register(url: str, username: str, email: str) -> None:
    """Someone registers through the API before the operator configures the admin."""
    plain = create_app(make_settings(url))
    transport = httpx.ASGITransport(app=plain)
    async with (
        LifespanManager(plain),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        response = await client.post(
            "/accounts/register",
            json={
                "username": username,
                "email": email,
                "password": PASSWORD,
                "password_confirm": PASSWORD,
            },
        )
        assert response.status_code == 201, response.text


async def _admins(url: str) -> list[str]:
    app = create_app(make_settings(url))
    async with LifespanManager(app), app_state(app).sessionmaker() as session:
        query = select(User.username).where(User.is_admin.is_(True))
        return list((await session.execute(query)).scalars())


@pytest.mark.parametrize(
    ("username", "email", "named"),
    [
        # The attacker took the admin's name (or a look-alike of it) with their own address.
        ("boss", "mallory@example.net", "ADMIN_USERNAME='boss'"),
        ("B\u043e\u0455s", "mallory@example.net", "ADMIN_USERNAME='boss'"),
        # Or the admin's address under another name (unverified, as nobody confirms it).
        ("mallory", "boss@example.com", "ADMIN_EMAIL"),
    ],
)
async def test_bootstrap_refuses_an_account_matching_only_one_of_name_and_email(
    backend: str, tmp_path: Path, username: str, email: str, named: str
) -> None:
    async with new_database(backend, tmp_path) as url:
        await migrate(url, "head")
        await _register(url, username, email)
        settings = make_settings(
            url,
            admin_username="boss",
            admin_email="Boss@Example.com",
            admin_password=ADMIN_PASSWORD,
        )
        app = create_app(settings)
        with pytest.raises(AdminBootstrapConflict) as refused:
            async with LifespanManager(app):
                pytest.fail("the app started")  # pragma: no cover
        assert named in str(refused.value)
        assert repr(username) in str(refused.value)
        assert await _admins(url) == []


async def test_bootstrap_keeps_an_account_matching_both_with_its_password(
    backend: str, tmp_path: Path
) -> None:
    async with new_database(backend, tmp_path) as url:
        await migrate(url, "head")
        await _register(url, "boss", "boss@example.com")
        settings = make_settings(
            url,
            admin_username="BOSS",
            admin_email="Boss@Example.com",
            admin_password=ADMIN_PASSWORD,
        )
        app = create_app(settings)
        transport = httpx.ASGITransport(app=app)
        async with (
            LifespanManager(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            token = await login(client, "boss", PASSWORD)
            me = await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
            assert me.json()["is_admin"] is True
        assert await _admins(url) == ["boss"]


@pytest.mark.slow
def test_gallery_serve_exits_non_zero_naming_the_conflict(tmp_path: Path) -> None:
    with live_server(tmp_path) as server:
        response = httpx.post(
            f"{server.url}/accounts/register",
            json={
                "username": "boss",
                "email": "mallory@example.net",
                "password": PASSWORD,
                "password_confirm": PASSWORD,
            },
            timeout=10,
        )
        assert response.status_code == 201, response.text
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "ADMIN_", "LOG_", "WEB_"))
    }
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "ENVIRONMENT": "test",
            "SECRET_KEY": TEST_SECRET,
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'live.db'}",
            "HOST": "127.0.0.1",
            "PORT": "9",  # never bound: start-up stops before the socket is opened
            "ADMIN_USERNAME": "boss",
            "ADMIN_EMAIL": "boss@example.com",
            "ADMIN_PASSWORD": ADMIN_PASSWORD,
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "admin bootstrap refused" in output
    assert "ADMIN_USERNAME='boss'" in output
    assert ADMIN_PASSWORD not in output
