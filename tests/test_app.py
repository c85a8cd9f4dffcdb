"""Application-wide behaviour: docs, error shapes, transactions, start-up."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.security import PasswordHasher
from app.main import create_app
from app.state import app_state
from app.users.models import User
from tests.conftest import make_settings, migrate, new_database
from tests.support.helpers import PASSWORD, assert_error, login, sign_up
from tests.support.image_host import ImageHost, make_image


async def test_openapi_documents_every_operation(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operations = [
        (path, method, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    ]
    assert {(method.upper(), path) for path, method, _ in operations} == {
        ("POST", "/accounts/register"),
        ("POST", "/accounts/login"),
        ("POST", "/accounts/verify-registration"),
        ("POST", "/accounts/refresh"),
        ("POST", "/accounts/logout"),
        ("POST", "/accounts/logout-all"),
        ("POST", "/accounts/change-password"),
        ("POST", "/accounts/send-reset-password-link"),
        ("POST", "/accounts/reset-password"),
        ("GET", "/accounts/profile"),
        ("PATCH", "/accounts/profile"),
        ("DELETE", "/accounts/profile"),
        ("POST", "/accounts/verify-email"),
        ("POST", "/accounts/resend-verification"),
        ("GET", "/accounts/sessions"),
        ("DELETE", "/accounts/sessions/{session_id}"),
        ("GET", "/users/me"),
        ("GET", "/users"),
        ("GET", "/users/{user_id}"),
        ("PATCH", "/users/{user_id}"),
        ("GET", "/users/{user_id}/images"),
        ("POST", "/users/{user_id}/images"),
        ("GET", "/users/{user_id}/images/{image_id}"),
        ("PATCH", "/users/{user_id}/images/{image_id}"),
        ("DELETE", "/users/{user_id}/images/{image_id}"),
        ("POST", "/users/{user_id}/images/{image_id}/recheck"),
        ("GET", "/users/{user_id}/images/{image_id}/raw"),
        ("GET", "/users/{user_id}/images/{image_id}/thumbnail"),
        ("GET", "/images"),
        ("DELETE", "/images"),
        ("GET", "/images/health"),
    }
    for path, method, operation in operations:
        where = f"{method.upper()} {path}"
        assert operation.get("summary"), where
        assert operation.get("description"), where
        assert operation.get("tags"), where
        assert any(code.startswith("2") for code in operation["responses"]), where
        errors = [code for code in operation["responses"] if code[0] in "45"]
        assert errors, f"{where} documents no error responses"
        assert not path.endswith("/"), where
    assert (
        spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]["password"][
            "tokenUrl"
        ]
        == "/accounts/login"
    )


async def test_docs_pages_are_served(client: httpx.AsyncClient) -> None:
    for path in ("/docs", "/redoc"):
        response = await client.get(path)
        assert response.status_code == 200
        assert "text/html" in response.headers["content-type"]


async def test_unknown_path_is_json_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/no/such/thing"), 404, "not_found")
    assert_error(await client.put("/users"), 405, "method_not_allowed")


class _FailingCommitSession(AsyncSession):
    async def commit(self) -> None:
        raise OperationalError("COMMIT", {}, Exception("the database went away"))


async def test_failed_commit_is_an_error_response_and_nothing_is_stored(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    working = app_state(app).sessionmaker
    app_state(app).sessionmaker = async_sessionmaker(
        app_state(app).engine, class_=_FailingCommitSession, expire_on_commit=False
    )
    response = await client.post(
        "/accounts/register",
        json={
            "username": "alice",
            "email": "alice@example.com",
            "password": PASSWORD,
            "password_confirm": PASSWORD,
        },
    )
    app_state(app).sessionmaker = working
    body = assert_error(response, 503, "database_unavailable")
    assert response.headers["retry-after"] == "1"
    assert set(body) == {"detail", "code"}
    assert "Traceback" not in response.text
    assert "database went away" not in response.text
    async with working() as session:
        assert (await session.execute(select(func.count()).select_from(User))).scalar_one() == 0


async def test_no_database_connection_is_held_while_the_url_is_checked(
    app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    seen: list[int] = []
    png = make_image("PNG")

    def probe(handler: BaseHTTPRequestHandler) -> None:
        # Runs in the image host's thread while the app awaits this answer.
        seen.append(app_state(app).engine.pool.checkedout())
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Length", str(len(png)))
        handler.end_headers()
        if handler.command == "GET":
            handler.wfile.write(png)

    image_host.routes["/probe.png"] = probe
    response = await client.post(
        f"/users/{alice.id}/images",
        json={"image_url": image_host.url("/probe.png")},
        headers=alice.headers,
    )
    assert response.status_code == 201, response.text
    assert seen
    assert all(count == 0 for count in seen), seen


async def test_admin_bootstrap_is_idempotent_and_keeps_existing_password(
    backend: str, tmp_path: Path
) -> None:
    async with new_database(backend, tmp_path) as url:
        await migrate(url, "head")
        settings = make_settings(
            url,
            admin_username="boss",
            admin_email="boss@example.com",
            admin_password="first-admin-password",
        )
        for _ in range(2):
            app = create_app(settings)
            async with LifespanManager(app):
                async with app_state(app).sessionmaker() as session:
                    users = list((await session.execute(select(User))).scalars())
                assert [(u.username, u.is_admin) for u in users] == [("boss", True)]
        app = create_app(settings.model_copy(update={"admin_password": None}))
        transport = httpx.ASGITransport(app=app)
        async with (
            LifespanManager(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            token = await login(client, "boss", "first-admin-password")
            me = await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
            assert me.json()["is_admin"] is True


async def test_admin_bootstrap_promotes_existing_user_without_touching_password(
    backend: str, tmp_path: Path
) -> None:
    async with new_database(backend, tmp_path) as url:
        await migrate(url, "head")
        plain = create_app(make_settings(url))
        transport = httpx.ASGITransport(app=plain)
        async with (
            LifespanManager(plain),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            await sign_up(client, "boss")
        settings = make_settings(
            url,
            admin_username="boss",
            admin_email="boss@example.com",
            admin_password="another-password-entirely",
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


async def test_password_hashing_runs_off_the_event_loop() -> None:
    hasher = PasswordHasher(max_concurrent=1)
    threads: list[str] = []
    original = hasher._context.hash

    def recording_hash(secret: str) -> str:
        threads.append(threading.current_thread().name)
        return original(secret)

    hasher._context.hash = recording_hash  # type: ignore[method-assign]
    stored = await hasher.hash("some password")
    assert threads
    assert threads[0] != threading.main_thread().name
    assert (await hasher.verify("some password", stored))[0] is True
    assert (await hasher.verify("wrong password", stored))[0] is False


@pytest.mark.parametrize("path", ["/users/", "/users/me/", "/accounts/profile/"])
async def test_trailing_slash_paths_answer_directly(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code in (200, 401)
    assert "location" not in response.headers
