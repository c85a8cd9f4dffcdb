"""The database goes away and comes back: fast 503s meanwhile, recovery without a restart,
and nothing acknowledged is lost. Runs on a PostgreSQL cluster of its own that it stops."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from app.main import create_app
from app.state import app_state
from tests.conftest import _create_postgres_database, make_settings, migrate
from tests.reliability.support import LoopbackOnlyTransport, PostgresCluster
from tests.support.helpers import assert_error, sign_up, sign_up_admin
from tests.support.image_host import ImageHost, LoopbackResolver

OUTAGE_DEADLINE = 2.0


@pytest.fixture
async def cluster_app(postgres_cluster: PostgresCluster) -> AsyncIterator[FastAPI]:
    url = await _create_postgres_database(postgres_cluster.server_url)
    await migrate(url, "head")
    application = create_app(
        make_settings(url, database_pool_size=4),
        image_fetch_transport=LoopbackOnlyTransport(),
        image_resolver=LoopbackResolver(),
    )
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def cluster_client(cluster_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=cluster_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def _has_route(app: FastAPI, path: str) -> bool:
    return path in app.openapi()["paths"]


async def test_database_outage_answers_503_fast_and_recovers_without_losing_data(
    cluster_app: FastAPI,
    cluster_client: httpx.AsyncClient,
    postgres_cluster: PostgresCluster,
    image_host: ImageHost,
) -> None:
    client = cluster_client
    alice = await sign_up(client, "alice")
    admin = await sign_up_admin(cluster_app, client, "root")
    acknowledged: list[int] = []
    for path in ("/cat.png", "/photo.jpg", "/anim.gif"):
        response = await client.post(
            f"/users/{alice.id}/images",
            json={"image_url": image_host.url(path)},
            headers=alice.headers,
        )
        assert response.status_code == 201, response.text
        acknowledged.append(response.json()["id"])

    postgres_cluster.stop()
    try:
        calls = [
            ("GET", "/users", None, {}),
            ("GET", f"/users/{alice.id}/images", None, {}),
            ("GET", "/users/me", None, alice.headers),
            ("GET", "/images", None, admin.headers),
            (
                "POST",
                f"/users/{alice.id}/images",
                {"image_url": image_host.url("/x.png")},
                alice.headers,
            ),
            ("POST", "/accounts/login", {"login": "alice", "password": "whatever-it-is"}, {}),
            ("DELETE", "/images", None, admin.headers),
        ]
        for _ in range(2):  # the first round finds dead pooled connections, the second none
            for method, path, body, headers in calls:
                started = time.monotonic()
                response = await client.request(method, path, json=body, headers=headers)
                elapsed = time.monotonic() - started
                assert_error(response, 503, "database_unavailable")
                assert response.headers["retry-after"] == "1"
                assert elapsed < OUTAGE_DEADLINE, f"{method} {path} took {elapsed:.2f}s"
        if _has_route(cluster_app, "/health/ready"):
            assert (await client.get("/health/ready")).status_code == 503
    finally:
        postgres_cluster.start()

    # The first request after the restart succeeds: dead pooled connections are replaced.
    response = await client.get(f"/users/{alice.id}/images", params={"limit": 200})
    assert response.status_code == 200, response.text
    assert sorted(image["id"] for image in response.json()["items"]) == sorted(acknowledged)
    response = await client.post(
        f"/users/{alice.id}/images",
        json={"image_url": image_host.url("/cat.png?after=1")},
        headers=alice.headers,
    )
    assert response.status_code == 201, response.text
    if _has_route(cluster_app, "/health/ready"):
        assert (await client.get("/health/ready")).status_code == 200


async def test_first_request_after_a_quiet_database_restart_succeeds(
    cluster_app: FastAPI, cluster_client: httpx.AsyncClient, postgres_cluster: PostgresCluster
) -> None:
    """The server restarts while no request runs: every pooled connection is dead, yet no
    request has failed to tell SQLAlchemy so. The next requests must still succeed."""
    client = cluster_client
    alice = await sign_up(client, "alice")
    # Fill the pool with several idle connections, all of which the restart will kill.
    responses = await asyncio.gather(
        *(client.get(f"/users/{alice.id}/images") for _ in range(8)),
        *(client.get("/users/me", headers=alice.headers) for _ in range(4)),
    )
    assert {r.status_code for r in responses} == {200}
    assert app_state(cluster_app).engine.pool.checkedin() >= 2

    # In threads, so the event loop keeps running meanwhile, as it does in a live server.
    await asyncio.to_thread(postgres_cluster.stop)
    await asyncio.to_thread(postgres_cluster.start)

    for _ in range(3):
        responses = await asyncio.gather(
            client.get(f"/users/{alice.id}/images"),
            client.get("/users/me", headers=alice.headers),
            client.get("/users"),
        )
        assert [r.status_code for r in responses] == [200, 200, 200], [r.text for r in responses]


async def test_too_many_connections_is_503_not_500(
    postgres_cluster: PostgresCluster, image_host: ImageHost
) -> None:
    """A full server refuses new connections with SQLSTATE 53300, which asyncpg raises at
    connect time as a plain DBAPIError: still 503, and fine again once a slot frees up."""
    url = await _create_postgres_database(postgres_cluster.server_url)
    await migrate(url, "head")
    role = f"gallery_limited_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            for statement in (
                f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1",
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
                f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
            ):
                await connection.execute(text(statement))
    finally:
        await admin.dispose()
    limited_url = make_url(url).set(username=role).render_as_string(hide_password=False)
    application = create_app(
        make_settings(limited_url, database_pool_size=1),
        image_fetch_transport=LoopbackOnlyTransport(),
        image_resolver=LoopbackResolver(),
    )
    # Someone else holds the role's only connection.
    holder = await asyncpg.connect(
        host="127.0.0.1", port=postgres_cluster.port, user=role, database=make_url(url).database
    )
    try:
        async with LifespanManager(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                started = time.monotonic()
                response = await client.get("/users")
                assert time.monotonic() - started < OUTAGE_DEADLINE
                assert_error(response, 503, "database_unavailable")
                await holder.close()
                response = await client.get("/users")
                assert response.status_code == 200, response.text
    finally:
        if not holder.is_closed():
            await holder.close()
