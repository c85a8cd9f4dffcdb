"""Fixtures shared by the reliability tests: a populated world of users and images, the
loopback-only outbound transport, and a throwaway PostgreSQL cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import func, select

from app.images.models import Image
from app.main import create_app
from app.state import app_state
from app.users.models import User
from tests.conftest import empty_tables, make_settings
from tests.reliability.support import LoopbackOnlyTransport, PostgresCluster, postgres_bin_dir
from tests.support.helpers import Account, sign_up, sign_up_admin
from tests.support.image_host import ImageHost, LoopbackResolver


@dataclass
class World:
    """Alice owns an image; Bob is another user; Root is an admin."""

    owner: Account
    other: Account
    admin: Account
    image_id: int
    image_host: ImageHost


@pytest.fixture
async def app(database_url: str, settings_overrides: dict[str, Any]) -> AsyncIterator[FastAPI]:
    """The suite's app, with image checks that can only ever reach loopback."""
    application = create_app(
        make_settings(database_url, **settings_overrides),
        image_fetch_transport=LoopbackOnlyTransport(),
        image_resolver=LoopbackResolver(),
    )
    try:
        async with LifespanManager(application):
            yield application
    finally:
        await empty_tables(database_url)


@pytest.fixture
async def world(app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost) -> World:
    owner = await sign_up(client, "alice")
    other = await sign_up(client, "bob")
    admin = await sign_up_admin(app, client, "root")
    response = await client.post(
        f"/users/{owner.id}/images",
        json={"image_url": image_host.url("/cat.png"), "title": "cat"},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    return World(owner, other, admin, response.json()["id"], image_host)


async def count_rows(app: FastAPI) -> tuple[int, int]:
    """(users, images) stored right now."""
    async with app_state(app).sessionmaker() as session:
        users = (await session.execute(select(func.count()).select_from(User))).scalar_one()
        images = (await session.execute(select(func.count()).select_from(Image))).scalar_one()
    return int(users), int(images)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A started PostgreSQL cluster of the tests' own, which they may stop and restart."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.fail("initdb/pg_ctl not found: install PostgreSQL server binaries")
    cluster = PostgresCluster(bin_dir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
