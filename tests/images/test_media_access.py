"""The media access rule (app/images/media_access.py) through real requests.

The media routes themselves (/raw, /thumbnail) live elsewhere; here the rule is mounted on
probe routes under /probe that answer the image's id, so every way in and every refusal is
tested on its own: public media for all; private media only with the owner's or an admin's
bearer token or a valid, unexpired signature for that image and variant; 404 otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, Depends, FastAPI, Query

from app.images.media_access import RawMediaImage, media_image
from app.images.media_urls import MediaSigner, MediaSubject, MediaUrls, MediaVariant
from app.images.models import Image
from app.images.visibility import Visibility
from app.main import create_app
from app.state import app_state
from tests.conftest import empty_tables, make_settings
from tests.support.helpers import ISSUED_TOKENS, Account, assert_error, sign_up, sign_up_admin


async def _probe_thumbnail_variant(size: Annotated[int, Query(ge=1, le=4096)]) -> MediaVariant:
    return MediaVariant.thumbnail(size)


ThumbnailImage = Annotated[Image, Depends(media_image(_probe_thumbnail_variant))]
_probe = APIRouter(prefix="/probe")


@_probe.get("/users/{user_id}/images/{image_id}/raw")
async def _probe_raw(image: RawMediaImage) -> dict[str, Any]:
    return {"id": image.id, "variant": "raw"}


@_probe.get("/users/{user_id}/images/{image_id}/thumbnail")
async def _probe_thumbnail(image: ThumbnailImage) -> dict[str, Any]:
    return {"id": image.id, "variant": "thumbnail"}


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(database_url))
    application.include_router(_probe)
    try:
        async with LifespanManager(application):
            yield application
    finally:
        await empty_tables(database_url)


async def _store(app: FastAPI, owner: Account, visibility: Visibility, n: int = 0) -> Image:
    """An image stored directly: the rule is about reading, not about URL checks."""
    async with app_state(app).sessionmaker() as session, session.begin():
        image = Image(
            user_id=owner.id,
            image_url=f"http://127.0.0.1:9/{owner.username}/{visibility}/{n}.png",
            title=f"{visibility} {n}",
            content_type="image/png",
            visibility=visibility.value,
        )
        session.add(image)
        await session.flush()
    return image


def _row(image: Image) -> dict[str, Any]:
    return {
        "id": image.id,
        "user_id": image.user_id,
        "created_at": image.created_at,
        "visibility": image.visibility,
    }


def _probe_path(url: str) -> str:
    """A media URL as the API hands it out, sent to the probe route instead."""
    return "/probe" + url


def _with_query(url: str, **changes: str | None) -> str:
    """`url` with query parameters replaced (a value of None removes it)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return parts.path + ("?" + urlencode(query) if query else "")


@pytest.fixture
async def people(app: FastAPI, client: httpx.AsyncClient) -> dict[str, Any]:
    alice = await sign_up(client, "alice")
    bob = await sign_up(client, "bob")
    admin = await sign_up_admin(app, client)
    public = await _store(app, alice, Visibility.PUBLIC)
    private = await _store(app, alice, Visibility.PRIVATE)
    other_private = await _store(app, alice, Visibility.PRIVATE, 1)
    return {
        "alice": alice,
        "bob": bob,
        "admin": admin,
        "public": public,
        "private": private,
        "other_private": other_private,
    }


def _urls(app: FastAPI, image: Image) -> dict[str, str]:
    media: MediaUrls = app_state(app).media_urls
    urls = media.for_image(_row(image))
    # Signed URLs are credentials: the run's log check must never find them in a log line.
    for url in urls.values():
        signature = dict(parse_qsl(urlsplit(url).query)).get("signature")
        if signature:
            ISSUED_TOKENS.append(signature)
    return urls


async def _assert_hidden(response: httpx.Response) -> None:
    assert_error(response, 404, "image_not_found")


async def test_public_media_is_anyones(
    app: FastAPI, client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    urls = _urls(app, people["public"])
    assert urls["raw_url"] == f"/users/{people['alice'].id}/images/{people['public'].id}/raw"
    assert "signature" not in urls["thumbnail_url"]
    for url in urls.values():
        for headers in ({}, people["bob"].headers):
            response = await client.get(_probe_path(url), headers=headers)
            assert response.status_code == 200, response.text
            assert response.json()["id"] == people["public"].id


async def test_private_media_is_a_404_like_a_missing_image_without_credentials(
    app: FastAPI, client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    alice: Account = people["alice"]
    private: Image = people["private"]
    missing = await client.get(f"/probe/users/{alice.id}/images/999999/raw")
    await _assert_hidden(missing)
    for variant in ("raw", "thumbnail?size=256"):
        for headers in ({}, people["bob"].headers):
            response = await client.get(
                f"/probe/users/{alice.id}/images/{private.id}/{variant}", headers=headers
            )
            await _assert_hidden(response)
            assert response.json() == missing.json()


@pytest.mark.parametrize("viewer", ["alice", "admin"])
async def test_owner_and_admin_bearer_tokens_open_private_media(
    client: httpx.AsyncClient, people: dict[str, Any], viewer: str
) -> None:
    alice: Account = people["alice"]
    private: Image = people["private"]
    for variant in ("raw", "thumbnail?size=256", "thumbnail?size=1024"):
        response = await client.get(
            f"/probe/users/{alice.id}/images/{private.id}/{variant}",
            headers=people[viewer].headers,
        )
        assert response.status_code == 200, response.text
        assert response.json()["id"] == private.id


async def test_signed_urls_open_their_private_image_without_a_token(
    app: FastAPI, client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    urls = _urls(app, people["private"])
    for key, variant in (("raw_url", "raw"), ("thumbnail_url", "thumbnail")):
        query = dict(parse_qsl(urlsplit(urls[key]).query))
        assert set(query) >= {"expires", "signature"}
        response = await client.get(_probe_path(urls[key]))
        assert response.status_code == 200, response.text
        assert response.json() == {"id": people["private"].id, "variant": variant}


async def test_a_signature_for_another_image_is_refused(
    app: FastAPI, client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    alice: Account = people["alice"]
    signed = _urls(app, people["other_private"])["raw_url"]
    query = urlsplit(signed).query
    response = await client.get(
        f"/probe/users/{alice.id}/images/{people['private'].id}/raw?{query}"
    )
    await _assert_hidden(response)
    # The same image id under another user's path: another owner, refused as well.
    bob: Account = people["bob"]
    response = await client.get(
        f"/probe/users/{bob.id}/images/{people['other_private'].id}/raw?{query}"
    )
    await _assert_hidden(response)


async def test_a_signature_for_another_variant_is_refused(
    app: FastAPI, client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    urls = _urls(app, people["private"])
    thumbnail = urls["thumbnail_url"]
    raw = urls["raw_url"]
    # The 256-pixel signature asked for another size.
    await _assert_hidden(await client.get(_probe_path(_with_query(thumbnail, size="1024"))))
    # A thumbnail's signature on the original, and the original's on a thumbnail.
    thumbnail_query = urlsplit(thumbnail).query.replace("size=256&", "")
    raw_path = urlsplit(raw).path
    await _assert_hidden(await client.get(_probe_path(f"{raw_path}?{thumbnail_query}")))
    raw_query = urlsplit(raw).query
    thumbnail_path = urlsplit(thumbnail).path
    await _assert_hidden(await client.get(_probe_path(f"{thumbnail_path}?size=256&{raw_query}")))


async def test_expired_signatures_are_refused(
    app: FastAPI, client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    media: MediaUrls = app_state(app).media_urls
    private: Image = people["private"]
    subject = MediaSubject.of(private)
    path = f"/probe/users/{private.user_id}/images/{private.id}/raw"
    now = media.signer.now()
    for expires in (now - 3600, now - 1, now):
        signature = media.signer.signature(subject, MediaVariant.raw(), expires)
        ISSUED_TOKENS.append(signature)
        response = await client.get(path, params={"expires": expires, "signature": signature})
        await _assert_hidden(response)
    # The same signer, one minute ahead: the proof that the signatures themselves were good.
    later = now + 60
    signature = media.signer.signature(subject, MediaVariant.raw(), later)
    ISSUED_TOKENS.append(signature)
    response = await client.get(path, params={"expires": later, "signature": signature})
    assert response.status_code == 200, response.text


async def test_signatures_valid_longer_than_the_setting_allows_are_refused(
    app: FastAPI, client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    media: MediaUrls = app_state(app).media_urls
    private: Image = people["private"]
    far = media.signer.now() + media.signer.expire_seconds + 120
    signature = media.signer.signature(MediaSubject.of(private), MediaVariant.raw(), far)
    ISSUED_TOKENS.append(signature)
    response = await client.get(
        f"/probe/users/{private.user_id}/images/{private.id}/raw",
        params={"expires": far, "signature": signature},
    )
    await _assert_hidden(response)


def _flip(text: str, index: int) -> str:
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


async def test_edited_or_missing_signatures_are_refused(
    app: FastAPI, client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    raw = _urls(app, people["private"])["raw_url"]
    query = dict(parse_qsl(urlsplit(raw).query))
    signature, expires = query["signature"], query["expires"]
    edits: list[dict[str, str | None]] = [
        {"signature": _flip(signature, 0)},
        {"signature": _flip(signature, len(signature) - 1)},
        {"signature": signature[:-1]},
        {"signature": signature + "A"},
        {"signature": signature.upper()},
        {"signature": ""},
        {"signature": None},
        {"expires": None},
        {"expires": None, "signature": None},
        {"expires": str(int(expires) + 1)},
        {"expires": str(int(expires) - 1)},
        {"expires": "0" + expires},
        {"expires": expires + "0"},
        {"expires": "-" + expires},
        {"expires": expires + ".0"},
        {"expires": "1e10"},
        {"expires": "\u0661" * 10},  # Arabic-Indic digits: `isdigit`, but not ASCII
        {"expires": "9" * 400},
        {"signature": "\u00e9" * 43},
        {"signature": "A" * 10_000},
        {"signature": signature, "expires": ""},
    ]
    for edit in edits:
        response = await client.get(_probe_path(_with_query(raw, **edit)))
        assert response.status_code == 404, (edit, response.text)
        await _assert_hidden(response)
    # Bytes that are not UTF-8 at all.
    path = urlsplit(raw).path
    response = await client.get(_probe_path(f"{path}?expires={expires}&signature=%FF%FE%80"))
    await _assert_hidden(response)
    # And the untouched URL still works: every refusal above was the edit's doing.
    assert (await client.get(_probe_path(raw))).status_code == 200


async def test_public_media_ignores_malformed_signatures(
    client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    public: Image = people["public"]
    response = await client.get(
        f"/probe/users/{public.user_id}/images/{public.id}/raw",
        params={"expires": "soon", "signature": "forged"},
    )
    assert response.status_code == 200, response.text


async def test_an_invalid_bearer_token_is_a_401_before_the_image_is_looked_at(
    client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    for image in (people["public"], people["private"]):
        response = await client.get(
            f"/probe/users/{image.user_id}/images/{image.id}/raw",
            headers={"Authorization": "Bearer not-a-token"},
        )
        assert_error(response, 401, "invalid_token")


async def test_unknown_user_is_user_not_found(
    client: httpx.AsyncClient, people: dict[str, Any]
) -> None:
    private: Image = people["private"]
    response = await client.get(f"/probe/users/999999/images/{private.id}/raw")
    assert_error(response, 404, "user_not_found")


async def test_a_signed_url_of_a_deleted_image_does_not_open_its_successor(
    app: FastAPI, client: httpx.AsyncClient, people: dict[str, Any], backend: str
) -> None:
    alice: Account = people["alice"]
    newest = await _store(app, alice, Visibility.PRIVATE, 7)
    raw = _urls(app, newest)["raw_url"]
    assert (await client.get(_probe_path(raw))).status_code == 200
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.delete(await session.get(Image, newest.id))
    successor = await _store(app, alice, Visibility.PRIVATE, 8)
    if backend == "sqlite":
        # SQLite hands the highest id out again once its row is gone.
        assert successor.id == newest.id
    await _assert_hidden(await client.get(_probe_path(raw)))


def test_signed_expiries_are_windowed_and_never_outlive_the_setting() -> None:
    clock = [1_000_000.0]
    media = MediaUrls(_signer(clock))
    row = {
        "id": 5,
        "user_id": 2,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "visibility": "private",
    }
    first = media.for_image(row)
    expires = int(dict(parse_qsl(urlsplit(first["raw_url"]).query))["expires"])
    for step in range(0, 4000, 7):
        clock[0] = 1_000_000.0 + step
        now = int(clock[0])
        expiry = media.signer.expiry()
        assert now + 3600 * 3 // 4 <= expiry <= now + 3600
    # URLs issued within one window are the same string: browsers and caches reuse them.
    clock[0] = 1_000_000.0 - 1_000_000 % 900
    start = media.for_image(row)
    clock[0] += 899
    assert media.for_image(row) == start
    clock[0] += 1
    assert media.for_image(row) != start
    assert expires <= 1_000_000 + 3600


def test_the_key_is_derived_for_media_urls_only() -> None:
    signer = _signer([1_000_000.0])
    subject = MediaSubject(2, 5, datetime(2026, 1, 1, tzinfo=UTC))
    signature = signer.signature(subject, MediaVariant.raw(), 1_003_600)
    created = (subject.created_at - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()
    message = f"2\n5\n{int(created) * 1_000_000}\nraw\n1003600".encode()
    with_raw_secret = hmac.new(b"k" * 40, message, hashlib.sha256).digest()
    assert signature != base64.urlsafe_b64encode(with_raw_secret).rstrip(b"=").decode()
    assert signer.verify(subject, MediaVariant.raw(), "1003600", signature)
    assert not signer.verify(subject, MediaVariant.thumbnail(256), "1003600", signature)


def _signer(clock: list[float]) -> MediaSigner:
    return MediaSigner("k" * 40, 3600, clock=lambda: clock[0])
