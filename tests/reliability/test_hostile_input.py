"""Hostile input: every one a clean 4xx with `detail` and `code`, and nothing stored."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.reliability.conftest import World, count_rows
from tests.support.helpers import PASSWORD, assert_error, sign_up


@dataclass(frozen=True)
class BodyOperation:
    name: str
    method: str
    path: str  # formatted with the world: {owner}, {image}
    actor: str  # "anonymous", "owner" or "admin"
    valid: dict[str, Any]
    string_fields: tuple[str, ...]
    max_lengths: dict[str, int]


def _register_body() -> dict[str, Any]:
    return {
        "username": "mallory",
        "email": "mallory@example.com",
        "password": PASSWORD,
        "password_confirm": PASSWORD,
    }


BODY_OPERATIONS = (
    BodyOperation(
        "register",
        "POST",
        "/accounts/register",
        "anonymous",
        _register_body(),
        ("username", "email", "password", "password_confirm"),
        {"username": 150, "email": 320, "password": 1024, "password_confirm": 1024},
    ),
    BodyOperation(
        "login",
        "POST",
        "/accounts/login",
        "anonymous",
        {"login": "alice", "password": PASSWORD},
        ("login", "password"),
        {"login": 320, "password": 1024},
    ),
    BodyOperation(
        "create_image",
        "POST",
        "/users/{owner}/images",
        "owner",
        {"image_url": "{cat}", "title": "t"},
        ("image_url", "title"),
        {"image_url": 2048, "title": 200},
    ),
    BodyOperation(
        "update_image",
        "PATCH",
        "/users/{owner}/images/{image}",
        "owner",
        {"title": "t"},
        ("image_url", "title"),
        {"image_url": 2048, "title": 200},
    ),
    BodyOperation(
        "refresh",
        "POST",
        "/accounts/refresh",
        "anonymous",
        {"refresh_token": "not-a-real-refresh-token"},
        ("refresh_token",),
        {"refresh_token": 256},
    ),
    BodyOperation(
        "change_password",
        "POST",
        "/accounts/change-password",
        "owner",
        {"old_password": PASSWORD, "password": PASSWORD, "password_confirm": PASSWORD},
        ("old_password", "password", "password_confirm"),
        {"old_password": 1024, "password": 1024, "password_confirm": 1024},
    ),
    BodyOperation(
        "send_reset_password_link",
        "POST",
        "/accounts/send-reset-password-link",
        "anonymous",
        {"login": "alice"},
        ("login",),
        {"login": 320},
    ),
    BodyOperation(
        "resend_verification",
        "POST",
        "/accounts/resend-verification",
        "anonymous",
        {"login": "alice"},
        ("login",),
        {"login": 320},
    ),
    BodyOperation(
        "reset_password",
        "POST",
        "/accounts/reset-password",
        "anonymous",
        {"token": "bogus", "password": PASSWORD, "password_confirm": PASSWORD},
        ("token", "password", "password_confirm"),
        {"token": 256, "password": 1024, "password_confirm": 1024},
    ),
    BodyOperation(
        "verify_registration",
        "POST",
        "/accounts/verify-registration",
        "anonymous",
        {"token": "bogus"},
        ("token",),
        {"token": 256},
    ),
    BodyOperation(
        "verify_email",
        "POST",
        "/accounts/verify-email",
        "anonymous",
        {"token": "bogus"},
        ("token",),
        {"token": 256},
    ),
    BodyOperation(
        "update_profile",
        "PATCH",
        "/accounts/profile",
        "owner",
        {"username": "alice3"},
        ("username", "email"),
        {"username": 150, "email": 320},
    ),
    BodyOperation(
        "delete_profile",
        "DELETE",
        "/accounts/profile",
        "owner",
        {"password": "not-the-password"},
        ("password",),
        {"password": 1024},
    ),
    BodyOperation(
        "update_user",
        "PATCH",
        "/users/{owner}",
        "admin",
        {"username": "alice2"},
        ("username", "email"),
        {"username": 150, "email": 320},
    ),
)
STRING_FIELD_CASES = [
    (operation, field) for operation in BODY_OPERATIONS for field in operation.string_fields
]


def _ids(value: object) -> str:
    if isinstance(value, BodyOperation):
        return value.name
    return str(value)


def _path(operation: BodyOperation, world: World) -> str:
    return operation.path.format(owner=world.owner.id, image=world.image_id)


def _headers(operation: BodyOperation, world: World) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if operation.actor == "owner":
        headers |= world.owner.headers
    elif operation.actor == "admin":
        headers |= world.admin.headers
    return headers


def _valid_body(operation: BodyOperation, world: World) -> dict[str, Any]:
    body = dict(operation.valid)
    if body.get("image_url") == "{cat}":
        body["image_url"] = world.image_host.url("/anim.gif")
    return body


async def _send(
    client: httpx.AsyncClient, operation: BodyOperation, world: World, content: bytes
) -> httpx.Response:
    return await client.request(
        operation.method,
        _path(operation, world),
        content=content,
        headers=_headers(operation, world),
    )


async def _stored_state(app: FastAPI, client: httpx.AsyncClient, world: World) -> Any:
    """Everything a hostile request could have changed, as the API shows it."""
    users = (await client.get("/users", params={"limit": 200})).json()
    alice = (await client.get(f"/users/{world.owner.id}", headers=world.admin.headers)).json()
    images = (await client.get("/images", headers=world.admin.headers)).json()
    # Signed media URLs change with the clock's window, not with stored data.
    for image in images["items"]:
        image.pop("thumbnail_url")
        image.pop("raw_url")
    return await count_rows(app), users, alice, images


def _assert_validation_error(response: httpx.Response) -> None:
    body = assert_error(response, 422, "validation_error")
    assert isinstance(body["errors"], list)
    assert body["errors"]


MALFORMED_BODIES = (
    b"{",
    b"{'a': 1}",
    b"",
    b"[]",
    b'[{"a": 1}]',
    b'"just a string"',
    b"42",
    b"null",
    b"\xff\xfe\x00garbage",
    b'{"a": "\xc3\x28"}',  # not UTF-8: used to be an undocumented 400
    b"\x9c\\\x064",  # found by schemathesis
    b'{"a": NaN}',
)


@pytest.mark.parametrize("operation", BODY_OPERATIONS, ids=_ids)
async def test_malformed_bodies_are_422_and_store_nothing(
    app: FastAPI, client: httpx.AsyncClient, world: World, operation: BodyOperation
) -> None:
    before = await _stored_state(app, client, world)
    for content in MALFORMED_BODIES:
        response = await _send(client, operation, world, content)
        assert response.status_code == 422, (content, response.text)
        _assert_validation_error(response)
    assert await _stored_state(app, client, world) == before


@pytest.mark.parametrize("operation", BODY_OPERATIONS, ids=_ids)
async def test_wrong_types_missing_and_extra_fields_are_422(
    app: FastAPI, client: httpx.AsyncClient, world: World, operation: BodyOperation
) -> None:
    before = await _stored_state(app, client, world)
    valid = _valid_body(operation, world)
    bodies: list[Any] = [{**valid, "is_admin_everywhere": True}]
    for field in operation.string_fields:
        for wrong in (123, 1.5, True, ["x"], {"x": 1}):
            bodies.append({**valid, field: wrong})
    required = [f for f in valid if operation.method == "POST" and f != "title"]
    bodies += [{k: v for k, v in valid.items() if k != field} for field in required]
    for body in bodies:
        response = await _send(client, operation, world, json.dumps(body).encode())
        _assert_validation_error(response)
    assert await _stored_state(app, client, world) == before


@pytest.mark.parametrize(("operation", "field"), STRING_FIELD_CASES, ids=_ids)
@pytest.mark.parametrize(
    "poison",
    ["\x00", "a\x00b", "\ud800", "x\udfffy"],
    ids=["nul", "inner-nul", "lone-high", "lone-low"],
)
async def test_nul_and_unpaired_surrogates_are_422_in_every_string_field(
    app: FastAPI,
    client: httpx.AsyncClient,
    world: World,
    operation: BodyOperation,
    field: str,
    poison: str,
) -> None:
    before = await _stored_state(app, client, world)
    body = {**_valid_body(operation, world), field: f"ok{poison}ok"}
    if field.startswith("password"):
        body["password"] = body["password_confirm"] = (
            f"{PASSWORD}{poison}" if "confirm" in body else body[field]
        )
        body[field] = f"{PASSWORD}{poison}"
    # ensure_ascii escapes the poison as \u0000 / \ud800: valid JSON text, hostile content.
    response = await _send(client, operation, world, json.dumps(body, ensure_ascii=True).encode())
    _assert_validation_error(response)
    assert await _stored_state(app, client, world) == before


@pytest.mark.parametrize(("operation", "field"), STRING_FIELD_CASES, ids=_ids)
async def test_too_long_strings_are_422_in_every_string_field(
    app: FastAPI, client: httpx.AsyncClient, world: World, operation: BodyOperation, field: str
) -> None:
    before = await _stored_state(app, client, world)
    limit = operation.max_lengths[field]
    for length in (limit + 1, 100_000):
        value = "a" * length
        if field == "email":
            value = "a" * (length - len("@example.com")) + "@example.com"
        if field == "image_url":
            value = world.image_host.url("/") + "a" * (length - len(world.image_host.url("/")))
        body = {**_valid_body(operation, world), field: value}
        if field.startswith("password") and "password_confirm" in body:
            body["password"] = body["password_confirm"] = value
        response = await _send(client, operation, world, json.dumps(body).encode())
        _assert_validation_error(response)
    assert await _stored_state(app, client, world) == before


async def test_image_url_of_2049_characters_is_refused_and_2048_is_checked(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    base = world.image_host.url("/cat.png?pad=")
    too_long = base + "a" * (2049 - len(base))
    response = await client.post(
        f"/users/{world.owner.id}/images", json={"image_url": too_long}, headers=world.owner.headers
    )
    _assert_validation_error(response)
    longest = base + "a" * (2048 - len(base))
    response = await client.post(
        f"/users/{world.owner.id}/images", json={"image_url": longest}, headers=world.owner.headers
    )
    assert response.status_code == 201, response.text
    assert response.json()["image_url"] == longest
    assert await count_rows(app) == (3, 2)


def _sent_counter() -> tuple[list[int], Any]:
    sent = [0]

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(160):  # 160 x 64 KiB = 10 MiB
            sent[0] += 1
            yield b" " * 65536

    return sent, chunks


@pytest.mark.parametrize("operation", BODY_OPERATIONS, ids=_ids)
async def test_ten_megabyte_body_is_413_before_it_is_read_whole(
    app: FastAPI, client: httpx.AsyncClient, world: World, operation: BodyOperation
) -> None:
    before = await _stored_state(app, client, world)
    body = json.dumps({**_valid_body(operation, world), "pad": " " * 10_000_000}).encode()
    response = await _send(client, operation, world, body)
    assert_error(response, 413, "payload_too_large")

    # Without a Content-Length the body is counted as it streams in and cut off early.
    sent, chunks = _sent_counter()
    response = await client.request(
        operation.method,
        _path(operation, world),
        content=chunks(),
        headers=_headers(operation, world),
    )
    assert_error(response, 413, "payload_too_large")
    assert sent[0] <= 1024 * 1024 // 65536 + 2, sent[0]
    assert await _stored_state(app, client, world) == before


@pytest.mark.parametrize("settings_overrides", [{"max_body_bytes": 2048}])
async def test_max_body_bytes_is_configurable(
    client: httpx.AsyncClient, world: World, settings_overrides: dict[str, Any]
) -> None:
    body = {"image_url": world.image_host.url("/anim.gif"), "title": "x" * 190}
    response = await client.post(
        f"/users/{world.owner.id}/images", json=body, headers=world.owner.headers
    )
    assert response.status_code == 201, response.text
    response = await client.post(
        f"/users/{world.owner.id}/images",
        json={"image_url": world.image_host.url("/photo.jpg"), "title": "y" * 3000},
        headers=world.owner.headers,
    )
    assert_error(response, 413, "payload_too_large")


BAD_IDS = ["0", "-1", "abc", "1.5", "1e3", str(2**63), str(2**64), "9" * 40, "%00"]


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_bad_path_ids_are_422(
    app: FastAPI, client: httpx.AsyncClient, world: World, bad: str
) -> None:
    before = await _stored_state(app, client, world)
    owner, image = world.owner.id, world.image_id
    calls = [
        ("GET", f"/users/{bad}", None),
        ("PATCH", f"/users/{bad}", {"username": "zed"}),
        ("GET", f"/users/{bad}/images", None),
        ("POST", f"/users/{bad}/images", {"image_url": world.image_host.url("/cat.png")}),
        ("GET", f"/users/{bad}/images/{image}", None),
        ("GET", f"/users/{owner}/images/{bad}", None),
        ("PATCH", f"/users/{owner}/images/{bad}", {"title": "x"}),
        ("DELETE", f"/users/{owner}/images/{bad}", None),
        ("GET", f"/users/{bad}/images/{image}/raw", None),
        ("GET", f"/users/{owner}/images/{bad}/raw", None),
        ("GET", f"/users/{owner}/images/{bad}/thumbnail?size=256", None),
    ]
    for method, path, body in calls:
        response = await client.request(method, path, json=body, headers=world.admin.headers)
        _assert_validation_error(response)
    response = await client.get("/images", params={"user_id": bad}, headers=world.admin.headers)
    _assert_validation_error(response)
    assert await _stored_state(app, client, world) == before


async def test_largest_64_bit_id_is_a_clean_404(client: httpx.AsyncClient, world: World) -> None:
    biggest = 2**63 - 1
    assert_error(await client.get(f"/users/{biggest}"), 404, "user_not_found")
    assert_error(
        await client.get(f"/users/{world.owner.id}/images/{biggest}"), 404, "image_not_found"
    )


@pytest.mark.parametrize("bad", ["0", "-5", "201", "x", str(2**64)])
async def test_bad_limits_are_422(client: httpx.AsyncClient, bad: str) -> None:
    _assert_validation_error(await client.get("/users", params={"limit": bad}))


async def test_tampered_truncated_and_foreign_cursors_are_422(
    client: httpx.AsyncClient, world: World
) -> None:
    for name in ("carol", "dave", "erin"):
        await sign_up(client, name)
    for path in ("/cat.png", "/photo.jpg"):
        await client.post(
            f"/users/{world.other.id}/images",
            json={"image_url": world.image_host.url(path)},
            headers=world.other.headers,
        )
    users_cursor = (await client.get("/users", params={"limit": 1})).json()["next_cursor"]
    gallery = f"/users/{world.other.id}/images"
    gallery_cursor = (await client.get(gallery, params={"limit": 1})).json()["next_cursor"]
    assert users_cursor
    assert gallery_cursor
    flipped = users_cursor[:5] + ("A" if users_cursor[5] != "A" else "B") + users_cursor[6:]
    cases = [
        ("/users", users_cursor[:-3]),
        ("/users", users_cursor[:4]),
        ("/users", flipped),
        ("/users", users_cursor + "AA"),
        ("/users", "not-a-cursor!!"),
        ("/users", "%ff"),
        ("/users", gallery_cursor),  # from another listing
        (f"/users/{world.owner.id}/images", gallery_cursor),  # another user's gallery
        ("/images", gallery_cursor),
        (gallery, users_cursor),
    ]
    for path, cursor in cases:
        response = await client.get(path, params={"cursor": cursor}, headers=world.admin.headers)
        assert_error(response, 422, "invalid_cursor")
    _assert_validation_error(await client.get("/users", params={"cursor": "a" * 513}))
    # The genuine cursors still work.
    assert (await client.get("/users", params={"cursor": users_cursor})).status_code == 200
    assert (await client.get(gallery, params={"cursor": gallery_cursor})).status_code == 200


@pytest.mark.parametrize(
    "lookalike",
    ["Alice", "ALICE", "\uff41\uff4c\uff49\uff43\uff45", "A\u029fice".replace("\u029f", "l")],
    ids=["title", "upper", "fullwidth", "mixed"],
)
async def test_usernames_equal_under_case_or_nfkc_collide(
    app: FastAPI, client: httpx.AsyncClient, world: World, lookalike: str
) -> None:
    before = await _stored_state(app, client, world)
    response = await client.post(
        "/accounts/register",
        json={
            "username": lookalike,
            "email": "lookalike@example.com",
            "password": PASSWORD,
            "password_confirm": PASSWORD,
        },
    )
    assert_error(response, 409, "username_taken")
    response = await client.patch(
        f"/users/{world.other.id}", json={"username": lookalike}, headers=world.admin.headers
    )
    assert_error(response, 409, "username_taken")
    assert await _stored_state(app, client, world) == before


async def test_ligature_and_fullwidth_forms_collide_with_each_other(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await sign_up(client, "\ufb01ne")  # the "fi" ligature: NFKC gives "fine"
    for name in ("fine", "FINE", "\uff26\uff29\uff2e\uff25"):
        response = await client.post(
            "/accounts/register",
            json={
                "username": name,
                "email": f"x{len(name)}{ord(name[0])}@example.com",
                "password": PASSWORD,
                "password_confirm": PASSWORD,
            },
        )
        assert_error(response, 409, "username_taken")
    assert (await count_rows(app))[0] == 1


BAD_VISIBILITIES: list[Any] = [
    "secret",
    "PUBLIC",
    "Private",
    " private",
    "private ",
    "private\x00",
    "",
    "publi",
    "public,private",
    1,
    0,
    True,
    ["private"],
    {"value": "private"},
]


@pytest.mark.parametrize("operation", ["create", "update"])
async def test_visibility_is_only_public_or_private(
    app: FastAPI, client: httpx.AsyncClient, world: World, operation: str
) -> None:
    before = await _stored_state(app, client, world)
    owner = world.owner
    # An explicit null is refused too: omitting the field is how a PATCH keeps it.
    for bad in [*BAD_VISIBILITIES, None]:
        if operation == "create":
            body = {"image_url": world.image_host.url("/anim.gif"), "visibility": bad}
            response = await client.post(
                f"/users/{owner.id}/images", json=body, headers=owner.headers
            )
        else:
            response = await client.patch(
                f"/users/{owner.id}/images/{world.image_id}",
                json={"title": "changed", "visibility": bad},
                headers=owner.headers,
            )
        _assert_validation_error(response)
    assert await _stored_state(app, client, world) == before


HOSTILE_SIGNATURES: list[dict[str, str]] = [
    {"expires": "9" * 30, "signature": "A" * 43},
    {"expires": "-1", "signature": "A" * 43},
    {"expires": "0x10", "signature": "A" * 43},
    {"expires": "1e12", "signature": "A" * 43},
    {"expires": "\u0661\u0662\u0663", "signature": "A" * 43},
    {"expires": "1796209200", "signature": "A" * 5000},
    {"expires": "1796209200", "signature": "'; DROP TABLE images; --"},
    {"expires": "1796209200", "signature": "../../etc/passwd"},
    {"expires": "1796209200", "signature": "\u00e9\u00e9"},
    {"expires": "", "signature": ""},
    {"signature": "A" * 43},
    {"expires": "1796209200"},
]


async def test_hostile_media_signatures_are_the_404_of_a_missing_image(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    owner = world.owner
    created = await client.post(
        f"/users/{owner.id}/images",
        json={"image_url": world.image_host.url("/anim.gif"), "visibility": "private"},
        headers=owner.headers,
    )
    assert created.status_code == 201, created.text
    private = created.json()["id"]
    before = await _stored_state(app, client, world)
    for params in HOSTILE_SIGNATURES:
        for variant, extra in (("raw", {}), ("thumbnail", {"size": "256"})):
            response = await client.get(
                f"/users/{owner.id}/images/{private}/{variant}", params={**extra, **params}
            )
            assert_error(response, 404, "image_not_found")
    # The same values on a public image are ignored: it is served as to anyone.
    public = await client.get(
        f"/users/{owner.id}/images/{world.image_id}/raw", params=HOSTILE_SIGNATURES[0]
    )
    assert public.status_code == 200, public.text
    assert await _stored_state(app, client, world) == before


def test_every_operation_with_a_body_is_covered_here() -> None:
    """A new route that takes a body needs a BodyOperation above, listing its string fields."""
    from app.main import create_app
    from tests.conftest import make_settings

    schema = create_app(make_settings("sqlite+aiosqlite://")).openapi()
    with_body = {
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if "requestBody" in operation
    }
    covered = {
        (
            operation.method,
            operation.path.replace("{owner}", "{user_id}").replace("{image}", "{image_id}"),
        )
        for operation in BODY_OPERATIONS
    }
    assert with_body == covered, sorted(with_body ^ covered)
