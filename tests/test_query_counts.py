"""Database statements per read request, authentication included: at most two each.

Every statement the app's engine sends is counted with SQLAlchemy's `before_cursor_execute`
event, so a new lazy load, an extra existence check or a second auth lookup fails CI here
instead of showing up later as lost throughput in `bench/`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from app.images.models import Image
from app.state import app_state
from tests.support.helpers import Account, sign_up, sign_up_admin

MAX_QUERIES_PER_READ = 2


@contextmanager
def count_statements(app: FastAPI) -> Iterator[list[str]]:
    """Collect the SQL of every statement the app's engine executes inside the block."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    sync_engine = app_state(app).engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(sync_engine, "before_cursor_execute", record)


async def _seed_images(
    app: FastAPI, owner: Account, count: int, visibility: str = "public"
) -> list[int]:
    """Store images directly: these tests are about reads, not about the URL check."""
    async with app_state(app).sessionmaker() as session, session.begin():
        images = [
            Image(
                user_id=owner.id,
                image_url=f"http://127.0.0.1:9/{owner.username}/{visibility}/{n}.png",
                title=f"picture {n}",
                content_type="image/png",
                size_bytes=100 + n,
                visibility=visibility,
            )
            for n in range(count)
        ]
        session.add_all(images)
        await session.flush()
        return [image.id for image in images]


async def _get_counted(
    app: FastAPI, client: httpx.AsyncClient, path: str, account: Account | None = None
) -> tuple[httpx.Response, list[str]]:
    headers = account.headers if account is not None else {}
    with count_statements(app) as statements:
        response = await client.get(path, headers=headers)
    return response, statements


def _assert_within_budget(response: httpx.Response, statements: list[str]) -> None:
    assert response.status_code == 200, response.text
    # At least one statement proves the counter sees the app's engine at all.
    assert 1 <= len(statements) <= MAX_QUERIES_PER_READ, statements


@pytest.fixture
async def gallery(app: FastAPI, client: httpx.AsyncClient) -> dict[str, Any]:
    """Alice with three images (a limit of 2 gives a second page), Bob, and an admin."""
    alice = await sign_up(client, "alice")
    bob = await sign_up(client, "bob")
    admin = await sign_up_admin(app, client)
    image_ids = await _seed_images(app, alice, 3)
    return {"alice": alice, "bob": bob, "admin": admin, "image_ids": image_ids}


@pytest.mark.parametrize("viewer", [None, "alice", "bob", "admin"])
async def test_user_listing_costs_at_most_two_queries(
    app: FastAPI, client: httpx.AsyncClient, gallery: dict[str, Any], viewer: str | None
) -> None:
    account = gallery[viewer] if viewer else None
    first, statements = await _get_counted(app, client, "/users?limit=2", account)
    _assert_within_budget(first, statements)
    assert [user["username"] for user in first.json()["items"]] == ["alice", "bob"]
    cursor = first.json()["next_cursor"]
    second, statements = await _get_counted(app, client, f"/users?limit=2&cursor={cursor}")
    _assert_within_budget(second, statements)
    assert [user["username"] for user in second.json()["items"]] == ["root"]


@pytest.mark.parametrize("viewer", [None, "alice", "bob", "admin"])
async def test_user_profile_costs_at_most_two_queries(
    app: FastAPI, client: httpx.AsyncClient, gallery: dict[str, Any], viewer: str | None
) -> None:
    alice: Account = gallery["alice"]
    account = gallery[viewer] if viewer else None
    response, statements = await _get_counted(app, client, f"/users/{alice.id}", account)
    _assert_within_budget(response, statements)
    assert response.json()["username"] == "alice"
    assert ("email" in response.json()) == (viewer in ("alice", "admin"))


@pytest.mark.parametrize("viewer", ["alice", "admin"])
async def test_own_profile_costs_at_most_two_queries(
    app: FastAPI, client: httpx.AsyncClient, gallery: dict[str, Any], viewer: str
) -> None:
    account: Account = gallery[viewer]
    response, statements = await _get_counted(app, client, "/users/me", account)
    _assert_within_budget(response, statements)
    assert response.json()["id"] == account.id


@pytest.mark.parametrize("viewer", [None, "bob"])
async def test_gallery_pages_cost_at_most_two_queries(
    app: FastAPI, client: httpx.AsyncClient, gallery: dict[str, Any], viewer: str | None
) -> None:
    alice: Account = gallery["alice"]
    newest_first = sorted(gallery["image_ids"], reverse=True)
    account = gallery[viewer] if viewer else None
    first, statements = await _get_counted(
        app, client, f"/users/{alice.id}/images?limit=2", account
    )
    _assert_within_budget(first, statements)
    assert [image["id"] for image in first.json()["items"]] == newest_first[:2]
    cursor = first.json()["next_cursor"]
    second, statements = await _get_counted(
        app, client, f"/users/{alice.id}/images?limit=2&cursor={cursor}", account
    )
    _assert_within_budget(second, statements)
    assert [image["id"] for image in second.json()["items"]] == newest_first[2:]
    assert second.json()["next_cursor"] is None


@pytest.mark.parametrize("viewer", [None, "bob", "alice", "admin"])
async def test_galleries_with_private_images_cost_at_most_two_queries(
    app: FastAPI, client: httpx.AsyncClient, gallery: dict[str, Any], viewer: str | None
) -> None:
    alice: Account = gallery["alice"]
    private_ids = await _seed_images(app, alice, 2, "private")
    account = gallery[viewer] if viewer else None
    sees_private = viewer in ("alice", "admin")
    listing, statements = await _get_counted(app, client, f"/users/{alice.id}/images", account)
    _assert_within_budget(listing, statements)
    listed = [image["id"] for image in listing.json()["items"]]
    expected = gallery["image_ids"] + (private_ids if sees_private else [])
    assert listed == sorted(expected, reverse=True)
    one, statements = await _get_counted(
        app, client, f"/users/{alice.id}/images/{private_ids[0]}", account
    )
    if sees_private:
        _assert_within_budget(one, statements)
    else:
        # Refused like a missing image: the image lookup, then the user's (the answer to an
        # anonymous caller; a signed-in one also pays for the token).
        assert one.status_code == 404
        assert len(statements) <= MAX_QUERIES_PER_READ + (account is not None)


async def test_empty_gallery_costs_at_most_two_queries(
    app: FastAPI, client: httpx.AsyncClient, gallery: dict[str, Any]
) -> None:
    bob: Account = gallery["bob"]
    response, statements = await _get_counted(app, client, f"/users/{bob.id}/images")
    _assert_within_budget(response, statements)
    assert response.json() == {"items": [], "next_cursor": None}


async def test_one_image_costs_at_most_two_queries(
    app: FastAPI, client: httpx.AsyncClient, gallery: dict[str, Any]
) -> None:
    alice: Account = gallery["alice"]
    image_id = gallery["image_ids"][0]
    response, statements = await _get_counted(
        app, client, f"/users/{alice.id}/images/{image_id}", gallery["bob"]
    )
    _assert_within_budget(response, statements)
    assert response.json()["id"] == image_id
    assert response.json()["user_id"] == alice.id


async def test_admin_image_listing_costs_at_most_two_queries(
    app: FastAPI, client: httpx.AsyncClient, gallery: dict[str, Any]
) -> None:
    admin: Account = gallery["admin"]
    newest_first = sorted(gallery["image_ids"], reverse=True)
    first, statements = await _get_counted(app, client, "/images?limit=2", admin)
    _assert_within_budget(first, statements)
    assert [image["id"] for image in first.json()["items"]] == newest_first[:2]
    cursor = first.json()["next_cursor"]
    second, statements = await _get_counted(app, client, f"/images?limit=2&cursor={cursor}", admin)
    _assert_within_budget(second, statements)
    assert [image["id"] for image in second.json()["items"]] == newest_first[2:]
    filtered, statements = await _get_counted(
        app, client, f"/images?user_id={gallery['alice'].id}", admin
    )
    _assert_within_budget(filtered, statements)
    assert len(filtered.json()["items"]) == 3


@pytest.mark.parametrize("viewer", [None, "alice", "bob"])
async def test_gallery_page_costs_at_most_two_queries(
    app: FastAPI, client: httpx.AsyncClient, gallery: dict[str, Any], viewer: str | None
) -> None:
    await _seed_images(app, gallery["alice"], 1, "private")
    account = gallery[viewer] if viewer else None
    response, statements = await _get_counted(app, client, "/u/alice", account)
    _assert_within_budget(response, statements)
    assert response.text.count("<img ") == len(gallery["image_ids"])


@pytest.mark.parametrize("viewer", [None, "bob", "alice", "admin"])
@pytest.mark.parametrize("query", ["", "?limit=2", "?status=ok"])
async def test_gallery_revalidation_costs_one_lookup_besides_authentication(
    app: FastAPI,
    client: httpx.AsyncClient,
    gallery: dict[str, Any],
    viewer: str | None,
    query: str,
) -> None:
    """A current `If-None-Match` is answered from the gallery's version alone: no image is
    read. Signed out that is one statement; signed in, the token's check is the other."""
    alice: Account = gallery["alice"]
    await _seed_images(app, alice, 2, "private")
    account = gallery[viewer] if viewer else None
    path = f"/users/{alice.id}/images{query}"
    full, statements = await _get_counted(app, client, path, account)
    _assert_within_budget(full, statements)
    headers = {**(account.headers if account else {}), "If-None-Match": full.headers["ETag"]}
    with count_statements(app) as statements:
        revalidated = await client.get(path, headers=headers)
    assert revalidated.status_code == 304
    assert len(statements) == 1 + (account is not None), statements
    lookup = statements[-1].lower()
    assert "gallery_version" in lookup
    assert "from users" in lookup
    assert "images" not in lookup


async def test_a_stale_tag_costs_one_lookup_more_than_a_plain_read(
    app: FastAPI, client: httpx.AsyncClient, gallery: dict[str, Any]
) -> None:
    alice: Account = gallery["alice"]
    path = f"/users/{alice.id}/images"
    plain, statements = await _get_counted(app, client, path)
    _assert_within_budget(plain, statements)
    with count_statements(app) as stale_statements:
        stale = await client.get(path, headers={"If-None-Match": '"stale"'})
    assert stale.status_code == 200
    assert stale.content == plain.content
    assert len(stale_statements) == len(statements) + 1
