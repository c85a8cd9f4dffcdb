"""Conditional reads: every JSON GET carries a strong ETag and answers 304 to a current
`If-None-Match`; a gallery's tags change with every change to what it shows (one test per
kind of change), never leak across galleries, pages, filters or viewers, and are never
stale once a write has answered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.accounts.dependencies import _optional_user_read
from app.images import service
from app.images.models import Image
from app.images.recheck import Rechecker
from app.images.service import delete_all_images
from app.state import app_state
from app.users.models import User
from tests.images.flipping_host import FlippingImage
from tests.images.test_link_health import SETTINGS, flipping, make_due
from tests.support.helpers import PASSWORD, Account, sign_up, sign_up_admin
from tests.support.image_host import ImageHost


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(SETTINGS)


@pytest.fixture
def host(image_host: ImageHost) -> ImageHost:
    image_host.forget()
    return image_host


async def add(
    client: httpx.AsyncClient, host: ImageHost, owner: Account, name: str, **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/users/{owner.id}/images",
        json={"image_url": host.url(f"/cat.png?{name}"), **fields},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def add_flipping(
    client: httpx.AsyncClient, host: ImageHost, owner: Account
) -> tuple[FlippingImage, int]:
    """An image whose host the test flips (tests.images.flipping_host); its route and id."""
    route = flipping(host, "/flip.png")
    created = await client.post(
        f"/users/{owner.id}/images",
        json={"image_url": host.url("/flip.png")},
        headers=owner.headers,
    )
    assert created.status_code == 201, created.text
    image_id: int = created.json()["id"]
    return route, image_id


async def get(
    client: httpx.AsyncClient, path: str, account: Account | None = None, tag: str | None = None
) -> httpx.Response:
    headers = dict(account.headers) if account is not None else {}
    if tag is not None:
        headers["If-None-Match"] = tag
    return await client.get(path, headers=headers)


async def tag_of(client: httpx.AsyncClient, path: str, account: Account | None = None) -> str:
    response = await get(client, path, account)
    assert response.status_code == 200, response.text
    etag = response.headers["ETag"]
    assert etag.startswith('"'), etag
    assert etag.endswith('"'), etag
    return etag


async def assert_not_modified(
    client: httpx.AsyncClient, path: str, account: Account | None, tag: str, header: str = ""
) -> None:
    """`If-None-Match: header` (default: the tag itself) answers 304 with `tag`."""
    response = await get(client, path, account, header or tag)
    assert response.status_code == 304, response.text
    assert response.content == b""
    assert response.headers["ETag"] == tag


async def assert_changed(
    client: httpx.AsyncClient, path: str, account: Account | None, old_tag: str
) -> httpx.Response:
    """The old tag no longer validates: a full answer with a new tag, which does."""
    response = await get(client, path, account, old_tag)
    assert response.status_code == 200, response.text
    assert response.headers["ETag"] != old_tag
    await assert_not_modified(client, path, account, response.headers["ETag"])
    return response


@pytest.fixture
async def people(app: FastAPI, client: httpx.AsyncClient, host: ImageHost) -> dict[str, Any]:
    alice = await sign_up(client, "alice")
    bob = await sign_up(client, "bob")
    admin = await sign_up_admin(app, client)
    first = await add(client, host, alice, "1", title="one")
    second = await add(client, host, alice, "2", title="two")
    hidden = await add(client, host, alice, "3", visibility="private")
    await add(client, host, bob, "1")
    return {
        "alice": alice,
        "bob": bob,
        "admin": admin,
        "images": [first, second],
        "hidden": hidden,
    }


# Every JSON GET: (path, who asks, private cache, varies by caller).
READS: list[tuple[Callable[[dict[str, Any]], str], str | None, bool, bool]] = [
    (lambda p: f"/users/{p['alice'].id}/images", None, False, True),
    (lambda p: f"/users/{p['alice'].id}/images", "alice", True, True),
    (lambda p: f"/users/{p['alice'].id}/images", "admin", True, True),
    (lambda p: f"/users/{p['alice'].id}/images?status=ok&limit=1", "bob", True, True),
    (lambda p: f"/users/{p['alice'].id}/images/{p['images'][0]['id']}", None, False, True),
    (lambda p: f"/users/{p['alice'].id}/images/{p['hidden']['id']}", "alice", True, True),
    (lambda p: "/users", None, False, False),
    (lambda p: f"/users/{p['alice'].id}", None, False, True),
    (lambda p: f"/users/{p['alice'].id}", "alice", True, True),
    (lambda _: "/users/me", "bob", True, True),
    (lambda _: "/images", "admin", True, True),
    (lambda p: f"/images?user_id={p['alice'].id}&status=ok", "admin", True, True),
]


@pytest.mark.parametrize(("path", "who", "private", "varies"), READS)
async def test_every_json_read_answers_304_to_its_current_tag(
    client: httpx.AsyncClient,
    people: dict[str, Any],
    path: Callable[[dict[str, Any]], str],
    who: str | None,
    private: bool,
    varies: bool,
) -> None:
    url, account = path(people), people[who] if who else None
    full = await get(client, url, account)
    assert full.status_code == 200, full.text
    tag = full.headers["ETag"]
    assert not tag.startswith("W/")
    assert full.headers["Cache-Control"] == ("private, no-cache" if private else "no-cache")
    assert full.headers.get("Vary") == ("Authorization" if varies else None)
    again = await get(client, url, account)
    assert again.headers["ETag"] == tag
    assert again.content == full.content
    revalidated = await get(client, url, account, tag)
    assert revalidated.status_code == 304
    assert revalidated.content == b""
    for header in ("ETag", "Cache-Control", "Vary"):
        assert revalidated.headers.get(header) == full.headers.get(header), header
    assert "content-type" not in revalidated.headers
    # A tag it never issued is a full answer.
    other = await get(client, url, account, '"not-a-tag"')
    assert other.status_code == 200
    assert other.content == full.content


# The reads tagged by their bytes: all but the gallery pages READS starts with (tagged by
# their version); who asks each of them.
CONTENT_READS = [(path, who) for path, who, _, _ in READS[4:]]


@pytest.mark.parametrize(("path", "who"), CONTENT_READS)
async def test_content_tags_are_made_from_the_bytes_sent(
    app: FastAPI,
    client: httpx.AsyncClient,
    people: dict[str, Any],
    path: Callable[[dict[str, Any]], str],
    who: str | None,
) -> None:
    """Serialised once: the tag is the keyed hash of the exact body sent at that path and
    query (a strong tag: these bytes, no others), and the body is the route's response model
    as FastAPI itself renders it."""
    url, account = path(people), people[who] if who else None
    full = await get(client, url, account)
    assert full.status_code == 200, full.text
    assert full.headers["content-type"] == "application/json"
    target = httpx.URL(url)
    query = target.query.decode()
    tags = app_state(app).entity_tags
    assert full.headers["ETag"] == tags.tag_body(
        target.path + ("?" + query if query else ""), full.content
    )
    route = next(r for r in app.router.routes if getattr(r, "path", None) == _template(url, people))
    # FastAPI's own rendering of the same answer through the route's response model.
    field = route.response_field  # type: ignore[attr-defined]
    value, errors = field.validate(json.loads(full.content), {}, loc=("response",))
    assert not errors
    assert field.serialize_json(value, by_alias=True) == full.content


def _template(url: str, people: dict[str, Any]) -> str:
    path = url.split("?")[0]
    for name in ("alice", "bob"):
        path = path.replace(f"/users/{people[name].id}", "/users/{user_id}")
    for image in [*people["images"], people["hidden"]]:
        path = path.replace(f"/images/{image['id']}", "/images/{image_id}")
    return path


async def test_if_none_match_takes_lists_star_and_weak_tags(
    client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    path = f"/users/{people['alice'].id}/images"
    tag = await tag_of(client, path)
    for header in (f'"stale", {tag}', f"W/{tag}", "*", f'W/"x",W/{tag}'):
        await assert_not_modified(client, path, None, tag, header)
    response = await client.get(
        path, headers=[("If-None-Match", '"stale"'), ("If-None-Match", tag)]
    )
    assert response.status_code == 304
    for header in (f"*, {tag}", tag[:-1], f"{tag} junk", tag.lower() + "x"):
        assert (await get(client, path, None, header)).status_code == 200, header
    # `*` on a gallery that does not exist is still its 404.
    missing = await get(client, "/users/999999/images", None, "*")
    assert missing.status_code == 404
    assert missing.json()["code"] == "user_not_found"


# One test per kind of change: each moves the tags of the gallery's pages, and the next
# answer shows the change.


async def test_a_new_image_changes_the_gallery_tag(
    client: httpx.AsyncClient, host: ImageHost, people: dict[str, Any]
) -> None:
    alice = people["alice"]
    path = f"/users/{alice.id}/images"
    tag = await tag_of(client, path)
    created = await add(client, host, alice, "new")
    response = await assert_changed(client, path, None, tag)
    assert response.json()["items"][0]["id"] == created["id"]


async def test_a_changed_title_changes_the_gallery_and_image_tags(
    client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    alice, image = people["alice"], people["images"][0]
    gallery, one = f"/users/{alice.id}/images", f"/users/{alice.id}/images/{image['id']}"
    tags = [await tag_of(client, gallery), await tag_of(client, one)]
    patched = await client.patch(one, json={"title": "renamed"}, headers=alice.headers)
    assert patched.status_code == 200, patched.text
    listed = await assert_changed(client, gallery, None, tags[0])
    assert {item["title"] for item in listed.json()["items"]} == {"renamed", "two"}
    assert (await assert_changed(client, one, None, tags[1])).json()["title"] == "renamed"


async def test_a_visibility_change_changes_the_gallery_tag(
    client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    alice, image = people["alice"], people["images"][0]
    path = f"/users/{alice.id}/images"
    public_tag, owner_tag = await tag_of(client, path), await tag_of(client, path, alice)
    patched = await client.patch(
        f"{path}/{image['id']}", json={"visibility": "private"}, headers=alice.headers
    )
    assert patched.status_code == 200, patched.text
    public = await assert_changed(client, path, None, public_tag)
    assert image["id"] not in [item["id"] for item in public.json()["items"]]
    owner = await assert_changed(client, path, alice, owner_tag)
    assert image["id"] in [item["id"] for item in owner.json()["items"]]


async def test_a_deleted_image_changes_the_gallery_tag(
    client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    alice, image = people["alice"], people["images"][0]
    path = f"/users/{alice.id}/images"
    tag = await tag_of(client, path)
    deleted = await client.delete(f"{path}/{image['id']}", headers=alice.headers)
    assert deleted.status_code == 204
    response = await assert_changed(client, path, None, tag)
    assert image["id"] not in [item["id"] for item in response.json()["items"]]
    gone = await get(client, f"{path}/{image['id']}", None, '"anything"')
    assert gone.status_code == 404


async def test_deleting_every_image_changes_every_gallery_tag_batch_by_batch(
    app: FastAPI, client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    alice, bob, admin = people["alice"], people["bob"], people["admin"]
    paths = [f"/users/{alice.id}/images", f"/users/{bob.id}/images", "/images"]
    tags = [await tag_of(client, path, admin) for path in paths]
    versions_before = await versions(app)
    # One image per batch: every batch moves the versions of the galleries it touched.
    async with app_state(app).sessionmaker() as session:
        assert await delete_all_images(session, batch_size=1) == 4
    versions_after = await versions(app)
    assert versions_after[alice.id] == versions_before[alice.id] + 3  # 3 images, 3 batches
    assert versions_after[bob.id] == versions_before[bob.id] + 1
    assert versions_after[admin.id] == versions_before[admin.id]
    for path, tag in zip(paths, tags, strict=True):
        assert (await assert_changed(client, path, admin, tag)).json()["items"] == []


async def test_deleting_every_image_through_the_api_changes_the_gallery_tag(
    client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    alice, admin = people["alice"], people["admin"]
    path = f"/users/{alice.id}/images"
    tag = await tag_of(client, path)
    assert (await client.delete("/images", headers=admin.headers)).status_code == 204
    assert (await assert_changed(client, path, None, tag)).json()["items"] == []


async def test_a_manual_recheck_changes_the_gallery_tag(
    client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    alice, image = people["alice"], people["images"][0]
    path = f"/users/{alice.id}/images"
    tag = await tag_of(client, path)
    rechecked = await client.post(f"{path}/{image['id']}/recheck", headers=alice.headers)
    assert rechecked.status_code == 200, rechecked.text
    response = await assert_changed(client, path, None, tag)
    shown = {item["id"]: item for item in response.json()["items"]}
    assert shown[image["id"]]["checked_at"] == rechecked.json()["checked_at"]


async def test_a_failed_manual_recheck_changes_the_gallery_tag(
    client: httpx.AsyncClient, host: ImageHost, people: dict[str, Any]
) -> None:
    alice = people["alice"]
    route, image_id = await add_flipping(client, host, alice)
    path = f"/users/{alice.id}/images"
    tag = await tag_of(client, path)
    route.mode = "missing"
    failed = await client.post(f"{path}/{image_id}/recheck", headers=alice.headers)
    assert failed.status_code == 422, failed.text
    response = await assert_changed(client, path, None, tag)
    assert response.json()["items"][0]["status"] == "failing"


async def test_a_background_recheck_result_changes_the_gallery_tag(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost, people: dict[str, Any]
) -> None:
    alice, bob = people["alice"], people["bob"]
    route, image_id = await add_flipping(client, host, alice)
    alice_path, bob_path = f"/users/{alice.id}/images", f"/users/{bob.id}/images"
    alice_tag, bob_tag = await tag_of(client, alice_path), await tag_of(client, bob_path)
    before = await versions(app)
    route.mode = "missing"
    await make_due(app, image_id)
    state = app_state(app)
    result = await Rechecker(state.sessionmaker, state.image_checker, state.settings).run_pass()
    assert result.outcomes == {"image_url_bad_status": 1}, result.outcomes
    assert (await versions(app))[alice.id] == before[alice.id] + 1
    response = await assert_changed(client, alice_path, None, alice_tag)
    assert response.json()["items"][0]["status"] == "failing"
    # Only the galleries whose images were stored move.
    await assert_not_modified(client, bob_path, None, bob_tag)


async def test_a_postponed_recheck_changes_no_tag(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost, people: dict[str, Any]
) -> None:
    alice = people["alice"]
    route, image_id = await add_flipping(client, host, alice)
    path = f"/users/{alice.id}/images"
    tag = await tag_of(client, path)
    route.mode = "busy"
    await make_due(app, image_id)
    state = app_state(app)
    result = await Rechecker(state.sessionmaker, state.image_checker, state.settings).run_pass()
    assert result.outcomes == {"image_host_busy": 1}, result.outcomes
    await assert_not_modified(client, path, None, tag)


async def test_a_deleted_account_ends_its_gallery_and_changes_the_listings(
    client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    alice, admin = people["alice"], people["admin"]
    gallery, profile = f"/users/{alice.id}/images", f"/users/{alice.id}"
    tags = {
        path: await tag_of(client, path, admin) for path in (gallery, profile, "/users", "/images")
    }
    deleted = await client.request(
        "DELETE", "/accounts/profile", json={"password": PASSWORD}, headers=alice.headers
    )
    assert deleted.status_code == 204, deleted.text
    for path in (gallery, profile):
        response = await get(client, path, admin, tags[path])
        assert response.status_code == 404
        assert response.json()["code"] == "user_not_found"
    users = await assert_changed(client, "/users", admin, tags["/users"])
    assert "alice" not in [user["username"] for user in users.json()["items"]]
    images = await assert_changed(client, "/images", admin, tags["/images"])
    assert {image["user_id"] for image in images.json()["items"]} == {people["bob"].id}


async def test_a_reused_user_id_never_meets_its_predecessors_tags(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost
) -> None:
    first = await sign_up(client, "first")
    path = f"/users/{first.id}/images"
    tag = await tag_of(client, path)
    deleted = await client.request(
        "DELETE", "/accounts/profile", json={"password": PASSWORD}, headers=first.headers
    )
    assert deleted.status_code == 204
    second = await sign_up(client, "second")
    # SQLite hands the id out again; PostgreSQL does not. Either way the old tag is void.
    path = f"/users/{second.id}/images"
    assert (await get(client, path, None, tag)).status_code == 200


async def test_a_private_image_moves_the_owners_tag_but_never_shows_or_leaks_to_others(
    client: httpx.AsyncClient, host: ImageHost, people: dict[str, Any]
) -> None:
    alice, bob = people["alice"], people["bob"]
    path = f"/users/{alice.id}/images"
    owner_tag = await tag_of(client, path, alice)
    public_before = await get(client, path)
    secret = await add(client, host, alice, "secret", visibility="private")
    owner = await assert_changed(client, path, alice, owner_tag)
    assert owner.json()["items"][0]["id"] == secret["id"]
    for viewer in (None, bob):
        public = await get(client, path, viewer)
        assert public.status_code == 200
        assert secret["id"] not in [item["id"] for item in public.json()["items"]]
        assert public.json()["items"] == public_before.json()["items"]
        # The owner's tag never validates anyone else's view, and no view shares it.
        leaked = await get(client, path, viewer, owner.headers["ETag"])
        assert leaked.status_code == 200
        assert leaked.headers["ETag"] != owner.headers["ETag"]
        assert secret["id"] not in [item["id"] for item in leaked.json()["items"]]


async def test_tags_never_validate_another_gallery_page_filter_or_viewer(
    client: httpx.AsyncClient, host: ImageHost, people: dict[str, Any]
) -> None:
    alice, bob, admin = people["alice"], people["bob"], people["admin"]
    first_page = await get(client, f"/users/{alice.id}/images?limit=1")
    cursor = first_page.json()["next_cursor"]
    reads: list[tuple[str, Account | None]] = [
        (f"/users/{alice.id}/images", None),
        (f"/users/{alice.id}/images?limit=1", None),
        (f"/users/{alice.id}/images?limit=1&cursor={cursor}", None),
        (f"/users/{alice.id}/images?status=ok", None),
        (f"/users/{alice.id}/images?status=failing", None),
        (f"/users/{alice.id}/images", alice),
        (f"/users/{alice.id}/images", admin),
        (f"/users/{bob.id}/images", None),
        (f"/users/{alice.id}/images/{people['images'][0]['id']}", None),
        (f"/users/{alice.id}/images/{people['images'][1]['id']}", None),
        (f"/images?user_id={alice.id}", admin),
        (f"/users/{alice.id}", None),
        (f"/users/{alice.id}", alice),
    ]
    tags = [await tag_of(client, path, account) for path, account in reads]
    assert len(set(tags)) == len(tags)
    for index, (path, account) in enumerate(reads):
        for other, tag in enumerate(tags):
            if other != index:
                response = await get(client, path, account, tag)
                assert response.status_code == 200, (path, reads[other])


async def test_no_stale_304_once_a_write_has_answered(
    client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    """Writers and revalidating readers at once: a tag never labels two contents, and
    the tag a reader held before a write never validates once that write has answered."""
    alice, image = people["alice"], people["images"][0]
    path = f"/users/{alice.id}/images"
    seen: dict[str, str] = {}  # tag -> the answer it was issued with
    stop = asyncio.Event()

    async def poll() -> None:
        tag: str | None = None
        while not stop.is_set():
            response = await get(client, path, None, tag)
            if response.status_code == 200:
                tag = response.headers["ETag"]
                assert seen.setdefault(tag, response.text) == response.text
            else:
                assert response.status_code == 304
                assert response.headers["ETag"] == tag

    readers = [asyncio.create_task(poll()) for _ in range(4)]
    try:
        for round_ in range(15):
            before = await tag_of(client, path)
            patched = await client.patch(
                f"{path}/{image['id']}", json={"title": f"title {round_}"}, headers=alice.headers
            )
            assert patched.status_code == 200, patched.text
            after = await get(client, path, None, before)
            assert after.status_code == 200, round_
            assert after.json()["items"][-1]["title"] == f"title {round_}"
    finally:
        stop.set()
        await asyncio.gather(*readers)
    assert len(seen) >= 15


async def versions(app: FastAPI) -> dict[int, int]:
    async with app_state(app).sessionmaker() as session:
        rows = await session.execute(select(User.id, User.gallery_version))
        return dict(rows.all())


async def test_thumbnails_and_claims_change_no_version(
    app: FastAPI, client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    """Only what a gallery shows moves its version: making thumbnails does not."""
    alice, image = people["alice"], people["images"][0]
    path = f"/users/{alice.id}/images"
    tag = await tag_of(client, path)
    thumbnail = await client.get(f"{path}/{image['id']}/thumbnail?size=256")
    assert thumbnail.status_code == 200
    async with app_state(app).sessionmaker() as session:
        assert (await session.get(Image, image["id"])) is not None
    await assert_not_modified(client, path, None, tag)


async def test_concurrent_writes_to_one_gallery_each_move_its_version_once(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost, people: dict[str, Any]
) -> None:
    """Creates, title changes, visibility changes and deletes of one gallery at once, by its
    owner and an admin: none fails (PostgreSQL would abort one of a lock cycle), and the
    version moves exactly once per write that answered 2xx."""
    alice, admin = people["alice"], people["admin"]
    path = f"/users/{alice.id}/images"
    ids = [image["id"] for image in people["images"]]
    before = (await versions(app))[alice.id]

    async def write(index: int) -> httpx.Response:
        actor = (alice, admin)[index % 2]
        image_id = ids[index % 2]
        kind = index % 4
        if kind == 0:
            return await client.post(
                path, json={"image_url": host.url(f"/cat.png?c{index}")}, headers=actor.headers
            )
        if kind == 1:
            return await client.patch(
                f"{path}/{image_id}", json={"title": f"t{index}"}, headers=actor.headers
            )
        if kind == 2:
            visibility = ("public", "private")[index % 3 == 0]
            return await client.patch(
                f"{path}/{image_id}", json={"visibility": visibility}, headers=actor.headers
            )
        return await client.post(f"{path}/{image_id}/recheck", headers=actor.headers)

    answers = await asyncio.gather(*(write(index) for index in range(24)))
    assert [(a.status_code, a.text[:120]) for a in answers if a.status_code >= 300] == []
    assert (await versions(app))[alice.id] == before + len(answers)
    extra = await client.delete(f"{path}/{ids[0]}", headers=admin.headers)
    assert extra.status_code == 204
    assert (await versions(app))[alice.id] == before + len(answers) + 1


async def test_views_with_private_images_change_tags_with_their_media_url_window(
    app: FastAPI, client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    """A 304 must not keep a client on signed media URLs about to expire: the owner's tag
    moves with the signing window; the public view, with no signed URL, keeps its tag."""
    alice = people["alice"]
    signer = app_state(app).media_urls.signer
    now = signer.now()
    signer._clock = lambda: float(now)  # a fixed clock for the test
    path = f"/users/{alice.id}/images"
    owner = await get(client, path, alice)
    public_tag = await tag_of(client, path)
    await assert_not_modified(client, path, alice, owner.headers["ETag"])
    signer._clock = lambda: float(now + signer.expire_seconds)
    moved = await assert_changed(client, path, alice, owner.headers["ETag"])
    assert moved.json() != owner.json()  # new signatures and expiries
    await assert_not_modified(client, path, None, public_tag)


async def test_a_signed_out_revalidation_is_answered_before_routing_like_the_route_would(
    app: FastAPI, client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    """The short way (app/images/revalidation.py) answers what the route would: the same
    tag and headers, outer middleware included, and leaves every other case to the route."""
    alice, bob = people["alice"], people["bob"]
    path = f"/users/{alice.id}/images?limit=1"
    full = await get(client, path)
    short = await get(client, path, None, full.headers["ETag"])
    assert short.status_code == 304
    for header in ("ETag", "Cache-Control", "Vary", "X-Content-Type-Options", "X-Request-ID"):
        assert short.headers.get(header), header
    assert short.headers["ETag"] == full.headers["ETag"]
    # Signed in, the route decides: the same public view for Bob (a private 304), another
    # view for the owner.
    signed_in = await get(client, path, bob, full.headers["ETag"])
    assert signed_in.status_code == 304
    assert signed_in.headers["Cache-Control"] == "private, no-cache"
    owner = await get(client, path, alice, full.headers["ETag"])
    assert owner.status_code == 200
    assert owner.headers["ETag"] != full.headers["ETag"]
    # A trailing slash is the same URL; other methods and paths are not revalidated here.
    assert (
        await get(client, f"/users/{alice.id}/images/?limit=1", None, full.headers["ETag"])
    ).status_code == 304
    head = await client.head(path, headers={"If-None-Match": full.headers["ETag"]})
    assert head.status_code != 304
    invalid = await get(client, f"/users/{alice.id}/images?limit=0", None, full.headers["ETag"])
    assert invalid.status_code == 422


async def test_a_signed_out_revalidation_never_reaches_the_route(
    app: FastAPI, client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    alice = people["alice"]
    path = f"/users/{alice.id}/images"
    tag = await tag_of(client, path)

    async def no_route() -> None:
        raise AssertionError("the route ran")

    app.dependency_overrides[_optional_user_read] = no_route
    try:
        await assert_not_modified(client, path, None, tag)
        # The control: a stale tag does reach the route (its error answers 500 here).
        assert (await get(client, path, None, '"stale"')).status_code == 500
    finally:
        app.dependency_overrides.clear()


@pytest.mark.parametrize("who", [None, "bob"])
async def test_an_empty_page_never_takes_the_tag_of_a_write_that_filled_it_meanwhile(
    client: httpx.AsyncClient, host: ImageHost, monkeypatch: pytest.MonkeyPatch, who: str | None
) -> None:
    """An image added between the empty page's read and its version's read: the answer
    (empty) must not carry the new version's tag, or every revalidation after it would be a
    304 for a gallery that is no longer empty."""
    bob = await sign_up(client, "bob")
    viewer = bob if who else None
    real_paginate = service.paginate
    raced: list[dict[str, Any]] = []

    async def paginate_then_race(*args: Any, **kwargs: Any) -> Any:
        page = await real_paginate(*args, **kwargs)
        if not page.items and not raced:
            raced.append(await add(client, host, bob, "late"))
        return page

    monkeypatch.setattr(service, "paginate", paginate_then_race)
    path = f"/users/{bob.id}/images"
    first = await get(client, path, viewer)
    assert first.status_code == 200, first.text
    assert first.json()["items"] == []
    assert raced
    monkeypatch.setattr(service, "paginate", real_paginate)
    again = await get(client, path, viewer, first.headers.get("ETag", '"none"'))
    assert again.status_code == 200, again.text
    assert [item["id"] for item in again.json()["items"]] == [raced[0]["id"]]
    await assert_not_modified(client, path, viewer, again.headers["ETag"])
