"""Where link health (issue 13) meets media and visibility (issue 14): one image answer with
both sets of fields, status filters that compose with visibility, and thumbnails that follow
the bytes a recheck finds (manual, scheduled, and in-process)."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image as PILImage
from sqlalchemy import select, update

from app.images.models import Image, Thumbnail
from app.state import app_state
from tests.images.flipping_host import FlippingImage
from tests.images.test_link_health import make_due, recheck_pass
from tests.support.helpers import Account, sign_up, sign_up_admin
from tests.support.image_host import ImageHost, make_image

LINK_HEALTH_FIELDS = {"status", "failure_count", "last_error", "checked_at", "content_changed_at"}
MEDIA_FIELDS = {"visibility", "thumbnail_url", "raw_url"}


def _flipping(host: ImageHost, path: str, size: tuple[int, int]) -> FlippingImage:
    route = FlippingImage(make_image("PNG", size))
    host.routes[path] = route
    return route


async def _add(
    client: httpx.AsyncClient, owner: Account, url: str, visibility: str = "public"
) -> dict[str, Any]:
    response = await client.post(
        f"/users/{owner.id}/images",
        json={"image_url": url, "visibility": visibility},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _set_status(app: FastAPI, image_id: int, status: str, failures: int) -> None:
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(
            update(Image)
            .where(Image.id == image_id)
            .values(status=status, failure_count=failures, last_error="image_url_bad_status")
        )


async def _thumbnail_etags(app: FastAPI, image_id: int) -> dict[int, str]:
    async with app_state(app).sessionmaker() as session:
        rows = await session.execute(
            select(Thumbnail.size, Thumbnail.etag).where(Thumbnail.image_id == image_id)
        )
        return {int(size): str(etag) for size, etag in rows.all()}


async def _thumbnail(client: httpx.AsyncClient, image: dict[str, Any]) -> httpx.Response:
    response = await client.get(image["thumbnail_url"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/webp"
    return response


def _dimensions(response: httpx.Response) -> tuple[int, int]:
    return PILImage.open(io.BytesIO(response.content)).size


async def test_image_answers_carry_link_health_and_media_fields(
    client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    public = await _add(client, alice, image_host.url("/cat.png"))
    private = await _add(client, alice, image_host.url("/photo.jpg"), "private")
    for image in (public, private):
        assert image.keys() >= LINK_HEALTH_FIELDS | MEDIA_FIELDS
        assert (image["status"], image["failure_count"], image["last_error"]) == ("ok", 0, None)
        assert image["content_changed_at"] is None
    assert "signature=" not in public["raw_url"]
    assert "signature=" in private["raw_url"]
    listed = await client.get(f"/users/{alice.id}/images", headers=alice.headers)
    for item in listed.json()["items"]:
        assert item.keys() >= LINK_HEALTH_FIELDS | MEDIA_FIELDS


async def test_status_filters_compose_with_visibility_in_every_listing(
    app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    bob = await sign_up(client, "bob")
    admin = await sign_up_admin(app, client)
    public_broken = await _add(client, alice, image_host.url("/cat.png"))
    private_broken = await _add(client, alice, image_host.url("/photo.jpg"), "private")
    private_ok = await _add(client, alice, image_host.url("/anim.gif"), "private")
    image_host.add("/pic.webp", 200, make_image("WEBP"), {"Content-Type": "image/webp"})
    public_failing = await _add(client, alice, image_host.url("/pic.webp"))
    await _set_status(app, public_broken["id"], "broken", 3)
    await _set_status(app, private_broken["id"], "broken", 4)
    await _set_status(app, public_failing["id"], "failing", 1)

    async def gallery(headers: dict[str, str] | None, status: str) -> list[int]:
        response = await client.get(
            f"/users/{alice.id}/images", params={"status": status}, headers=headers
        )
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    for outsider in (None, bob.headers):
        assert await gallery(outsider, "broken") == [public_broken["id"]]
        assert await gallery(outsider, "ok") == []
        assert await gallery(outsider, "failing") == [public_failing["id"]]
    for insider in (alice.headers, admin.headers):
        assert await gallery(insider, "broken") == [private_broken["id"], public_broken["id"]]
        assert await gallery(insider, "ok") == [private_ok["id"]]
    # The admin listing shows private images, filtered by status like the gallery.
    for params in ({"status": "broken"}, {"status": "broken", "user_id": alice.id}):
        response = await client.get("/images", params=params, headers=admin.headers)
        assert [item["id"] for item in response.json()["items"]] == [
            private_broken["id"],
            public_broken["id"],
        ]
    # Paging a filtered public listing never reaches a private image either.
    first = await client.get(f"/users/{alice.id}/images", params={"status": "broken", "limit": 1})
    assert [item["id"] for item in first.json()["items"]] == [public_broken["id"]]
    assert first.json()["next_cursor"] is None
    # The summary counts every image, private ones included, and is the admin's alone.
    summary = await client.get("/images/health", headers=admin.headers)
    assert {k: summary.json()[k] for k in ("ok", "failing", "broken")} == {
        "ok": 1,
        "failing": 1,
        "broken": 2,
    }
    for outsider_headers in (None, alice.headers):
        refused = await client.get("/images/health", headers=outsider_headers)
        assert refused.status_code in (401, 403)


async def test_manual_recheck_of_new_bytes_replaces_the_thumbnails(
    app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    route = _flipping(image_host, "/changing.png", (300, 100))
    alice = await sign_up(client, "alice")
    image = await _add(client, alice, image_host.url("/changing.png"))
    before = await _thumbnail(client, image)
    assert _dimensions(before) == (256, 85)
    stored_before = await _thumbnail_etags(app, image["id"])
    assert 256 in stored_before

    # The same bytes again: the thumbnails stay.
    recheck = f"/users/{alice.id}/images/{image['id']}/recheck"
    same = await client.post(recheck, headers=alice.headers)
    assert same.status_code == 200, same.text
    assert same.json()["content_changed_at"] is None
    assert await _thumbnail_etags(app, image["id"]) == stored_before

    route.replace(make_image("PNG", (100, 300)))
    changed = await client.post(recheck, headers=alice.headers)
    assert changed.status_code == 200, changed.text
    assert changed.json()["content_changed_at"] is not None
    assert (changed.json()["width"], changed.json()["height"]) == (100, 300)
    # Dropped in the recheck's own transaction (THUMBNAIL_ON_CREATE is off in the tests).
    assert await _thumbnail_etags(app, image["id"]) == {}
    after = await _thumbnail(client, image)
    assert _dimensions(after) == (85, 256)
    assert after.headers["etag"] != before.headers["etag"]


async def test_scheduled_recheck_of_new_bytes_drops_the_thumbnails_with_its_outcome(
    app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    changing = _flipping(image_host, "/scheduled.png", (300, 100))
    steady = _flipping(image_host, "/steady.png", (40, 20))
    alice = await sign_up(client, "alice")
    image = await _add(client, alice, image_host.url("/scheduled.png"))
    other = await _add(client, alice, image_host.url("/steady.png"))
    before = await _thumbnail(client, image)
    await _thumbnail(client, other)
    steady_etags = await _thumbnail_etags(app, other["id"])

    changing.replace(make_image("PNG", (100, 300)))
    await make_due(app)
    result = await recheck_pass(app)
    assert result.outcomes == {"changed": 1, "not_modified": 1}
    assert steady.not_modified == 1
    assert await _thumbnail_etags(app, image["id"]) == {}
    assert await _thumbnail_etags(app, other["id"]) == steady_etags
    after = await _thumbnail(client, image)
    assert _dimensions(after) == (85, 256)
    assert after.headers["etag"] != before.headers["etag"]


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "recheck_in_process": True,
            "recheck_interval_seconds": 1,
            "recheck_retry_seconds": 1,
            "thumbnail_on_create": True,
        }
    ],
)
async def test_in_process_recheck_of_new_bytes_makes_the_thumbnails_again(
    app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    route = _flipping(image_host, "/in-process.png", (300, 100))
    alice = await sign_up(client, "alice")
    image = await _add(client, alice, image_host.url("/in-process.png"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    sizes = set(app_state(app).settings.thumbnail_sizes)
    etags = await _thumbnail_etags(app, image["id"])
    while etags.keys() != sizes and loop.time() < deadline:
        await asyncio.sleep(0.1)
        etags = await _thumbnail_etags(app, image["id"])
    assert etags.keys() == sizes  # made in the background after the create
    route.replace(make_image("PNG", (100, 300)))
    # The in-process worker finds the new bytes by itself and the thumbnails follow, without
    # a request asking for them.
    remade = etags
    while (remade.keys() != sizes or remade[256] == etags[256]) and loop.time() < deadline:
        await asyncio.sleep(0.1)
        remade = await _thumbnail_etags(app, image["id"])
    assert remade.keys() == sizes
    assert remade[256] != etags[256]
    body = (await client.get(f"/users/{alice.id}/images/{image['id']}")).json()
    assert body["content_changed_at"] is not None
    assert _dimensions(await _thumbnail(client, image)) == (85, 256)
