"""Concurrent writers: nothing lost, the unique constraint decides races, no 500s."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.images.models import Image
from app.state import app_state
from app.users.models import User
from tests.reliability.conftest import World
from tests.support.helpers import assert_error, sign_up


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # Dozens of checks at once against a threaded host on a shared 2-core machine: give
    # the URL check room, so that the database side is what these tests exercise.
    return {"image_fetch_timeout": 10.0}


async def _stored_images(app: FastAPI) -> list[tuple[int, int]]:
    async with app_state(app).sessionmaker() as session:
        rows = await session.execute(select(Image.id, Image.user_id).order_by(Image.id))
        return [(row.id, row.user_id) for row in rows]


async def _stored_urls(app: FastAPI) -> set[tuple[int, str]]:
    async with app_state(app).sessionmaker() as session:
        rows = await session.execute(select(Image.user_id, Image.image_url))
        return {(row.user_id, row.image_url) for row in rows}


async def _listed_ids(client: httpx.AsyncClient, user_id: int) -> list[int]:
    ids: list[int] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        response = await client.get(f"/users/{user_id}/images", params=params)
        assert response.status_code == 200, response.text
        ids += [image["id"] for image in response.json()["items"]]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return ids


async def test_fifty_concurrent_creates_all_succeed_and_are_listed(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    owner = world.owner
    urls = [world.image_host.url(f"/cat.png?n={n}") for n in range(50)]
    responses = await asyncio.gather(
        *(
            client.post(f"/users/{owner.id}/images", json={"image_url": url}, headers=owner.headers)
            for url in urls
        )
    )
    assert [r.status_code for r in responses] == [201] * 50, [r.text for r in responses]
    created = {r.json()["id"] for r in responses}
    assert {r.json()["image_url"] for r in responses} == set(urls)
    listed = await _listed_ids(client, owner.id)
    assert created | {world.image_id} == set(listed)
    assert len(listed) == 51
    assert len(await _stored_images(app)) == 51


async def test_twenty_concurrent_creates_of_one_url_store_it_once(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    owner = world.owner
    url = world.image_host.url("/photo.jpg")
    responses = await asyncio.gather(
        *(
            client.post(f"/users/{owner.id}/images", json={"image_url": url}, headers=owner.headers)
            for _ in range(20)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 19, [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "image_duplicate")
    winner = next(r.json() for r in responses if r.status_code == 201)
    stored = [image for image in await _stored_images(app) if image[0] != world.image_id]
    assert stored == [(winner["id"], owner.id)]


async def test_delete_all_images_while_users_add_images_leaves_no_orphans(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    users = [world.owner, world.other]
    users += [await sign_up(client, name) for name in ("carol", "dave")]
    # Keyed by (user, URL): SQLite may hand a deleted image's id to a new one.
    created: list[tuple[tuple[int, str], float, float]] = []  # (key, sent at, answered at)
    deletes: list[tuple[float, float]] = []  # (sent at, answered at)
    failures: list[str] = []

    async def add_images(account_index: int) -> None:
        account = users[account_index]
        for n in range(12):
            url = world.image_host.url(f"/anim.gif?u={account.id}&n={n}")
            sent = time.monotonic()
            response = await client.post(
                f"/users/{account.id}/images", json={"image_url": url}, headers=account.headers
            )
            if response.status_code != 201:
                failures.append(f"create: {response.status_code} {response.text}")
                continue
            created.append(((account.id, url), sent, time.monotonic()))

    async def delete_everything() -> None:
        for _ in range(6):
            sent = time.monotonic()
            response = await client.delete("/images", headers=world.admin.headers)
            if response.status_code != 204:
                failures.append(f"delete: {response.status_code} {response.text}")
            deletes.append((sent, time.monotonic()))
            await asyncio.sleep(0.01)

    await asyncio.gather(*(add_images(i) for i in range(len(users))), delete_everything())
    assert not failures, failures
    stored = await _stored_images(app)
    stored_keys = await _stored_urls(app)
    async with app_state(app).sessionmaker() as session:
        user_ids = set((await session.execute(select(User.id))).scalars())
    # No orphans: every stored image belongs to an existing user and was acknowledged.
    assert {user_id for _, user_id in stored} <= user_ids
    assert stored_keys <= {key for key, _, _ in created}
    last_delete_sent = max(sent for sent, _ in deletes)
    last_delete_done = max(done for _, done in deletes)
    for key, sent, done in created:
        if done < last_delete_sent:  # committed before the last DELETE began: gone
            assert key not in stored_keys
        if sent > last_delete_done:  # began after the last DELETE committed: kept
            assert key in stored_keys
    # And every stored image is listed in its owner's gallery.
    for account in users:
        listed = set(await _listed_ids(client, account.id))
        assert listed == {image_id for image_id, user_id in stored if user_id == account.id}
