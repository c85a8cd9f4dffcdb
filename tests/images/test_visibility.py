"""Private images through the HTTP API: seen by their owner and admins only, in every
listing and read; to anyone else exactly like an image that does not exist."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from tests.support.helpers import ISSUED_TOKENS, Account, assert_error, sign_up, sign_up_admin
from tests.support.image_host import ImageHost


async def _add(
    client: httpx.AsyncClient, owner: Account, url: str, **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/users/{owner.id}/images", json={"image_url": url, **fields}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    _remember_signatures(body)
    return body


def _remember_signatures(image: dict[str, Any]) -> None:
    """Signed media URLs are credentials: the run's log check must never see them."""
    for key in ("thumbnail_url", "raw_url"):
        signature = dict(parse_qsl(urlsplit(image[key]).query)).get("signature")
        if signature:
            ISSUED_TOKENS.append(signature)


@pytest.fixture
async def people(app: FastAPI, client: httpx.AsyncClient, image_host: ImageHost) -> dict[str, Any]:
    """Alice with images public, private, public (in that order); Bob; an admin."""
    alice = await sign_up(client, "alice")
    bob = await sign_up(client, "bob")
    admin = await sign_up_admin(app, client)
    first = await _add(client, alice, image_host.url("/cat.png"), title="first")
    secret = await _add(
        client, alice, image_host.url("/photo.jpg"), title="secret", visibility="private"
    )
    last = await _add(client, alice, image_host.url("/anim.gif"), title="last")
    return {
        "alice": alice,
        "bob": bob,
        "admin": admin,
        "first": first,
        "secret": secret,
        "last": last,
    }


def _viewers(people: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {
        "anonymous": {},
        "bob": people["bob"].headers,
        "alice": people["alice"].headers,
        "admin": people["admin"].headers,
    }


SEES_PRIVATE = {"anonymous": False, "bob": False, "alice": True, "admin": True}


async def test_images_are_public_by_default_and_private_on_request(
    people: dict[str, Any],
) -> None:
    assert people["first"]["visibility"] == "public"
    secret = people["secret"]
    assert secret["visibility"] == "private"
    base = f"/users/{people['alice'].id}/images/{secret['id']}"
    for key, path in (("thumbnail_url", f"{base}/thumbnail"), ("raw_url", f"{base}/raw")):
        parts = urlsplit(secret[key])
        assert parts.path == path
        query = dict(parse_qsl(parts.query))
        assert {"expires", "signature"} <= set(query)
    assert dict(parse_qsl(urlsplit(secret["thumbnail_url"]).query))["size"] == "256"


async def test_gallery_listing_shows_private_images_to_owner_and_admins_only(
    client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    alice: Account = people["alice"]
    for viewer, headers in _viewers(people).items():
        response = await client.get(f"/users/{alice.id}/images", headers=headers)
        assert response.status_code == 200, response.text
        titles = [image["title"] for image in response.json()["items"]]
        expected = ["last", "secret", "first"] if SEES_PRIVATE[viewer] else ["last", "first"]
        assert titles == expected, viewer


async def test_paging_as_the_public_skips_private_images_on_every_page(
    client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    alice: Account = people["alice"]
    first_page = (await client.get(f"/users/{alice.id}/images", params={"limit": 1})).json()
    assert [image["title"] for image in first_page["items"]] == ["last"]
    second_page = (
        await client.get(
            f"/users/{alice.id}/images",
            params={"limit": 1, "cursor": first_page["next_cursor"]},
        )
    ).json()
    assert [image["title"] for image in second_page["items"]] == ["first"]
    assert second_page["next_cursor"] is None


async def test_single_read_of_a_private_image_is_a_404_like_a_missing_one(
    client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    alice: Account = people["alice"]
    secret_path = f"/users/{alice.id}/images/{people['secret']['id']}"
    missing_path = f"/users/{alice.id}/images/999999"
    for viewer, headers in _viewers(people).items():
        response = await client.get(secret_path, headers=headers)
        if SEES_PRIVATE[viewer]:
            assert response.status_code == 200, response.text
            assert response.json()["title"] == "secret"
            continue
        assert_error(response, 404, "image_not_found")
        missing = await client.get(missing_path, headers=headers)
        assert (response.status_code, response.json()) == (missing.status_code, missing.json())


async def test_admin_listing_shows_private_images(
    client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    response = await client.get("/images", headers=people["admin"].headers)
    titles = [image["title"] for image in response.json()["items"]]
    assert titles == ["last", "secret", "first"]


async def test_other_users_writes_to_a_private_image_answer_as_for_a_missing_one(
    app: FastAPI, client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    alice: Account = people["alice"]
    bob: Account = people["bob"]
    for image_id in (people["secret"]["id"], 999999):
        answers = []
        for method, suffix, body in (
            ("PATCH", "", {"visibility": "public"}),
            ("POST", "/recheck", None),
            ("DELETE", "", None),
        ):
            response = await client.request(
                method,
                f"/users/{alice.id}/images/{image_id}{suffix}",
                json=body,
                headers=bob.headers,
            )
            answers.append((response.status_code, response.json()))
        # The permission check comes before the lookup: nothing tells the two ids apart.
        assert answers == [(403, {"detail": answers[0][1]["detail"], "code": "forbidden"})] * 3
    still = await client.get(
        f"/users/{alice.id}/images/{people['secret']['id']}", headers=alice.headers
    )
    assert still.json()["visibility"] == "private"


@pytest.mark.parametrize("editor", ["alice", "admin"])
async def test_owner_or_admin_changes_visibility_both_ways(
    client: httpx.AsyncClient, people: dict[str, Any], editor: str
) -> None:
    alice: Account = people["alice"]
    path = f"/users/{alice.id}/images/{people['first']['id']}"
    hidden = await client.patch(
        path, json={"visibility": "private"}, headers=people[editor].headers
    )
    assert hidden.status_code == 200, hidden.text
    assert hidden.json()["visibility"] == "private"
    assert hidden.json()["title"] == "first"  # nothing else changed
    assert "signature=" in hidden.json()["raw_url"]
    _remember_signatures(hidden.json())
    assert_error(await client.get(path), 404, "image_not_found")
    public_titles = [
        image["title"] for image in (await client.get(f"/users/{alice.id}/images")).json()["items"]
    ]
    assert public_titles == ["last"]

    shown = await client.patch(path, json={"visibility": "public"}, headers=people[editor].headers)
    assert shown.status_code == 200, shown.text
    assert shown.json()["raw_url"] == f"{path}/raw"
    assert (await client.get(path)).json()["visibility"] == "public"


async def test_patch_without_visibility_keeps_it(
    client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    alice: Account = people["alice"]
    path = f"/users/{alice.id}/images/{people['secret']['id']}"
    response = await client.patch(path, json={"title": "renamed"}, headers=alice.headers)
    assert response.status_code == 200, response.text
    assert response.json()["visibility"] == "private"
    _remember_signatures(response.json())


async def test_signed_urls_in_answers_are_stable_between_calls(
    client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    alice: Account = people["alice"]
    first = await client.get(f"/users/{alice.id}/images", headers=alice.headers)
    second = await client.get(f"/users/{alice.id}/images", headers=alice.headers)
    # Equal unless the two calls straddle a window edge (every 15 minutes by default).
    urls = [(i["thumbnail_url"], i["raw_url"]) for i in first.json()["items"]]
    again = [(i["thumbnail_url"], i["raw_url"]) for i in second.json()["items"]]
    expires = {dict(parse_qsl(urlsplit(u[1]).query)).get("expires") for u in urls} - {None}
    assert len(expires) == 1  # one expiry for the whole page
    if expires == {dict(parse_qsl(urlsplit(u[1]).query)).get("expires") for u in again} - {None}:
        assert urls == again


async def test_an_invalid_token_on_a_public_read_is_a_401(
    client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    alice: Account = people["alice"]
    bad = {"Authorization": "Bearer not-a-token"}
    assert_error(await client.get(f"/users/{alice.id}/images", headers=bad), 401, "invalid_token")
    assert_error(
        await client.get(f"/users/{alice.id}/images/{people['first']['id']}", headers=bad),
        401,
        "invalid_token",
    )
