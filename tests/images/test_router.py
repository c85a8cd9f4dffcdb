"""Galleries through the HTTP API, with URL checks against a real image host on loopback."""

from __future__ import annotations

import time
from datetime import datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.images.models import Image
from app.state import app_state
from tests.support.helpers import Account, assert_error, sign_up, sign_up_admin
from tests.support.image_host import ImageHost

IMAGE_FIELDS = {
    "id",
    "user_id",
    "image_url",
    "title",
    "content_type",
    "size_bytes",
    "width",
    "height",
    "checked_at",
    "created_at",
    "updated_at",
}


async def _image_count(app: FastAPI) -> int:
    async with app_state(app).sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(Image))).scalar_one())


async def _add(
    client: httpx.AsyncClient, owner: Account, url: str, title: str | None = None
) -> httpx.Response:
    body: dict[str, str] = {"image_url": url}
    if title is not None:
        body["title"] = title
    return await client.post(f"/users/{owner.id}/images", json=body, headers=owner.headers)


async def test_owner_adds_image_after_head_and_sniffing_check(
    app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    url = image_host.url("/cat.png")
    response = await _add(client, alice, url, "A cat")
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == IMAGE_FIELDS
    assert body["user_id"] == alice.id
    assert body["image_url"] == url
    assert body["title"] == "A cat"
    assert body["content_type"] == "image/png"
    assert body["size_bytes"] == len(image_host.png_bytes)
    assert (body["width"], body["height"]) == (3, 2)
    # Checked first, then stored.
    assert datetime.fromisoformat(body["checked_at"]) <= datetime.fromisoformat(body["created_at"])
    requests = [request for request in image_host.requests if request[1] == "/cat.png"]
    assert requests[-2:] == [("HEAD", "/cat.png"), ("GET", "/cat.png")]
    listing = (await client.get(f"/users/{alice.id}/images")).json()
    assert [image["id"] for image in listing["items"]] == [body["id"]]


async def test_content_type_is_parsed_properly(
    client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    response = await _add(client, alice, image_host.url("/photo.jpg"))
    assert response.status_code == 201, response.text
    assert response.json()["content_type"] == "image/jpeg"


async def test_redirect_to_an_image_is_followed(
    client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    response = await _add(client, alice, image_host.url("/moved.png"))
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/page.html", "image_url_not_image"),
        ("/image.svg", "image_url_not_image"),
        ("/gone.png", "image_url_bad_status"),
        ("/error.png", "image_url_bad_status"),
    ],
)
async def test_url_that_is_not_a_good_image_is_refused(
    app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost, path: str, code: str
) -> None:
    alice = await sign_up(client, "alice")
    assert_error(await _add(client, alice, image_host.url(path)), 422, code)
    assert await _image_count(app) == 0


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "ftp://example.com/cat.png",
        "javascript:alert(1)",
        "http:///cat.png",
        "http://user:pass@127.0.0.1/cat.png",
        "/relative/cat.png",
    ],
)
async def test_invalid_url_is_refused_without_a_request(
    app: FastAPI, client: httpx.AsyncClient, url: str
) -> None:
    alice = await sign_up(client, "alice")
    assert_error(await _add(client, alice, url), 422, "image_url_invalid")
    assert await _image_count(app) == 0


async def test_too_long_url_is_refused(client: httpx.AsyncClient, image_host: ImageHost) -> None:
    alice = await sign_up(client, "alice")
    url = image_host.url("/cat.png?" + "a" * 2049)
    assert_error(await _add(client, alice, url), 422, "validation_error")


async def test_unreachable_host_is_refused(client: httpx.AsyncClient) -> None:
    alice = await sign_up(client, "alice")
    # Port 9 on loopback: nothing listens there, the connection is refused at once.
    assert_error(
        await _add(client, alice, "http://127.0.0.1:9/cat.png"), 422, "image_url_unreachable"
    )


async def test_slow_host_is_cut_at_the_deadline(
    client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    started = time.monotonic()
    response = await _add(client, alice, image_host.url("/slow.png"))
    elapsed = time.monotonic() - started
    assert_error(response, 422, "image_url_unreachable")
    # The deadline is 1 s in tests and the host takes 3 s: the check gave up first.
    assert elapsed < image_host.slow_seconds


async def test_duplicate_url_is_a_conflict(
    app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    url = image_host.url("/cat.png")
    assert (await _add(client, alice, url)).status_code == 201
    assert_error(await _add(client, alice, url), 409, "image_duplicate")
    # Another user may keep the same URL.
    bob = await sign_up(client, "bob")
    assert (await _add(client, bob, url)).status_code == 201
    assert await _image_count(app) == 2


async def test_adding_to_another_users_gallery_is_forbidden(
    app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    bob = await sign_up(client, "bob")
    response = await client.post(
        f"/users/{alice.id}/images",
        json={"image_url": image_host.url("/cat.png")},
        headers=bob.headers,
    )
    assert_error(response, 403, "forbidden")
    anonymous = await client.post(
        f"/users/{alice.id}/images", json={"image_url": image_host.url("/cat.png")}
    )
    assert_error(anonymous, 401, "not_authenticated")
    assert await _image_count(app) == 0


async def test_admin_adds_to_any_gallery_but_not_to_missing_user(
    app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    admin = await sign_up_admin(app, client)
    url = image_host.url("/cat.png")
    ok = await client.post(
        f"/users/{alice.id}/images", json={"image_url": url}, headers=admin.headers
    )
    assert ok.status_code == 201
    assert ok.json()["user_id"] == alice.id
    missing = await client.post(
        "/users/99999/images", json={"image_url": url}, headers=admin.headers
    )
    assert_error(missing, 404, "user_not_found")


@pytest.mark.parametrize("field", ["id", "user_id", "created_at", "updated_at", "content_type"])
async def test_image_body_refuses_mass_assignment(
    app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost, field: str
) -> None:
    alice = await sign_up(client, "alice")
    body = {"image_url": image_host.url("/cat.png"), field: 1}
    response = await client.post(f"/users/{alice.id}/images", json=body, headers=alice.headers)
    assert_error(response, 422, "validation_error")
    assert await _image_count(app) == 0


async def test_gallery_lists_newest_first_with_pages(
    client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    ids = []
    for index in range(5):
        response = await _add(client, alice, image_host.url(f"/cat.png?n={index}"))
        ids.append(response.json()["id"])
    first = (await client.get(f"/users/{alice.id}/images", params={"limit": 3})).json()
    assert [image["id"] for image in first["items"]] == ids[::-1][:3]
    second = (
        await client.get(
            f"/users/{alice.id}/images", params={"limit": 3, "cursor": first["next_cursor"]}
        )
    ).json()
    assert [image["id"] for image in second["items"]] == ids[::-1][3:]
    assert second["next_cursor"] is None


async def test_gallery_of_missing_user_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/users/4242/images"), 404, "user_not_found")


async def test_get_image_is_public_and_scoped_to_its_gallery(
    client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    bob = await sign_up(client, "bob")
    image = (await _add(client, alice, image_host.url("/cat.png"))).json()
    ok = await client.get(f"/users/{alice.id}/images/{image['id']}")
    assert ok.status_code == 200
    assert ok.json() == image
    wrong_gallery = await client.get(f"/users/{bob.id}/images/{image['id']}")
    assert_error(wrong_gallery, 404, "image_not_found")
    assert_error(await client.get(f"/users/{alice.id}/images/987654"), 404, "image_not_found")
    assert_error(await client.get(f"/users/{alice.id}/images/{2**64}"), 422, "validation_error")


async def test_owner_updates_title_and_url_with_recheck(
    app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    image = (await _add(client, alice, image_host.url("/cat.png"), "old")).json()
    path = f"/users/{alice.id}/images/{image['id']}"
    titled = await client.patch(path, json={"title": "new"}, headers=alice.headers)
    assert titled.status_code == 200
    assert titled.json()["title"] == "new"
    moved = await client.patch(
        path, json={"image_url": image_host.url("/photo.jpg")}, headers=alice.headers
    )
    assert moved.status_code == 200
    assert moved.json()["content_type"] == "image/jpeg"
    assert moved.json()["title"] == "new"
    assert moved.json()["updated_at"] >= image["updated_at"]
    cleared = await client.patch(path, json={"title": None}, headers=alice.headers)
    assert cleared.json()["title"] is None


async def test_update_to_a_bad_url_keeps_the_image(
    app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    image = (await _add(client, alice, image_host.url("/cat.png"), "keep")).json()
    path = f"/users/{alice.id}/images/{image['id']}"
    bad = await client.patch(
        path,
        json={"image_url": image_host.url("/page.html"), "title": "lost"},
        headers=alice.headers,
    )
    assert_error(bad, 422, "image_url_not_image")
    assert (await client.get(path)).json() == image


async def test_update_to_a_url_already_in_gallery_is_a_conflict(
    client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    await _add(client, alice, image_host.url("/cat.png"))
    other = (await _add(client, alice, image_host.url("/photo.jpg"))).json()
    response = await client.patch(
        f"/users/{alice.id}/images/{other['id']}",
        json={"image_url": image_host.url("/cat.png")},
        headers=alice.headers,
    )
    assert_error(response, 409, "image_duplicate")


async def test_update_and_delete_permissions(
    app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    bob = await sign_up(client, "bob")
    admin = await sign_up_admin(app, client)
    image = (await _add(client, alice, image_host.url("/cat.png"))).json()
    path = f"/users/{alice.id}/images/{image['id']}"
    assert_error(await client.patch(path, json={"title": "x"}), 401, "not_authenticated")
    assert_error(
        await client.patch(path, json={"title": "x"}, headers=bob.headers), 403, "forbidden"
    )
    assert_error(await client.delete(path), 401, "not_authenticated")
    assert_error(await client.delete(path, headers=bob.headers), 403, "forbidden")
    by_admin = await client.patch(path, json={"title": "by admin"}, headers=admin.headers)
    assert by_admin.status_code == 200
    assert by_admin.json()["title"] == "by admin"
    deleted = await client.delete(path, headers=admin.headers)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_error(await client.get(path), 404, "image_not_found")
    assert await _image_count(app) == 0


async def test_owner_deletes_own_image(
    app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    image = (await _add(client, alice, image_host.url("/cat.png"))).json()
    path = f"/users/{alice.id}/images/{image['id']}"
    assert (await client.delete(path, headers=alice.headers)).status_code == 204
    assert_error(await client.delete(path, headers=alice.headers), 404, "image_not_found")
    assert await _image_count(app) == 0


async def test_admin_lists_all_images_and_filters_by_user(
    app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    bob = await sign_up(client, "bob")
    admin = await sign_up_admin(app, client)
    a = (await _add(client, alice, image_host.url("/cat.png"))).json()
    b = (await _add(client, bob, image_host.url("/cat.png"))).json()
    everything = (await client.get("/images", headers=admin.headers)).json()
    assert [image["id"] for image in everything["items"]] == [b["id"], a["id"]]
    only_alice = (
        await client.get("/images", params={"user_id": alice.id}, headers=admin.headers)
    ).json()
    assert [image["id"] for image in only_alice["items"]] == [a["id"]]
    paged = (await client.get("/images", params={"limit": 1}, headers=admin.headers)).json()
    assert len(paged["items"]) == 1
    assert paged["next_cursor"]
    wrong_filter = await client.get(
        "/images",
        params={"user_id": bob.id, "cursor": paged["next_cursor"]},
        headers=admin.headers,
    )
    assert_error(wrong_filter, 422, "invalid_cursor")


async def test_admin_deletes_every_image(
    app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    bob = await sign_up(client, "bob")
    admin = await sign_up_admin(app, client)
    await _add(client, alice, image_host.url("/cat.png"))
    await _add(client, bob, image_host.url("/cat.png"))
    assert_error(await client.delete("/images", headers=alice.headers), 403, "admin_required")
    assert_error(await client.delete("/images"), 401, "not_authenticated")
    assert await _image_count(app) == 2
    response = await client.delete("/images", headers=admin.headers)
    assert response.status_code == 204
    assert await _image_count(app) == 0


async def test_admin_only_listing_refuses_users(
    client: httpx.AsyncClient,
) -> None:
    alice = await sign_up(client, "alice")
    assert_error(await client.get("/images", headers=alice.headers), 403, "admin_required")
    assert_error(await client.get("/images"), 401, "not_authenticated")


async def test_deleting_a_user_cascades_to_their_images(
    app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    await _add(client, alice, image_host.url("/cat.png"))
    from app.users.models import User

    async with app_state(app).sessionmaker() as session, session.begin():
        await session.delete(await session.get(User, alice.id))
    assert await _image_count(app) == 0


async def test_non_owner_is_refused_before_the_body_is_read(
    app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    # The gallery check is a dependency: it answers a stranger before the body is validated,
    # so a malformed body tells them nothing, and no URL of theirs is fetched.
    alice = await sign_up(client, "alice")
    mallory = await sign_up(client, "mallory")
    image_host.forget()
    for body in ({"image_url": image_host.url("/cat.png"), "owner": 1}, {"title": 5}):
        response = await client.post(
            f"/users/{alice.id}/images", json=body, headers=mallory.headers
        )
        assert_error(response, 403, "forbidden")
    assert image_host.requests == []
    assert await _image_count(app) == 0
