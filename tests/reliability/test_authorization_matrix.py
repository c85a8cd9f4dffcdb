"""Who may call what: every route of the app, called as anonymous, another user, the
owner and an admin, with the exact status expected in each cell.

A route that has no row here fails the test: adding an endpoint means deciding, in this
table, who may call it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI
from jose import jwt
from starlette.routing import Mount, Route

from tests.reliability.conftest import World, count_rows
from tests.support.helpers import PASSWORD, login

ACTORS = ("anonymous", "other", "owner", "admin")
_counter = itertools.count()


@dataclass(frozen=True)
class Ctx:
    client: httpx.AsyncClient
    world: World


Body = Callable[[Ctx], Any]


def _register(_: Ctx) -> dict[str, str]:
    n = next(_counter)
    return {
        "username": f"newcomer{n}",
        "email": f"newcomer{n}@example.com",
        "password": PASSWORD,
        "password_confirm": PASSWORD,
    }


def _new_image_url(ctx: Ctx) -> dict[str, str]:
    return {"image_url": ctx.world.image_host.url(f"/cat.png?n={next(_counter)}")}


@dataclass(frozen=True)
class Row:
    """Expected status per actor (anonymous, other, owner, admin)."""

    anonymous: int
    other: int
    owner: int
    admin: int
    body: Body | None = None
    form: bool = False
    params: dict[str, str] | None = None  # query parameters of every call
    fresh_image: bool = False  # the cell needs an image of its own (it may delete it)
    ends_sessions: bool = False  # the cell signs the actor out: sign in again after it
    notes: str = field(default="", compare=False)

    def expected(self, actor: str) -> int:
        status: int = getattr(self, actor)
        return status


MATRIX: dict[tuple[str, str], Row] = {
    # Accounts
    ("POST", "/accounts/register"): Row(201, 201, 201, 201, body=_register),
    ("POST", "/accounts/login"): Row(
        200, 200, 200, 200, body=lambda c: {"login": "alice", "password": PASSWORD}
    ),
    ("GET", "/accounts/profile"): Row(401, 200, 200, 200),
    # Users
    ("GET", "/users/me"): Row(401, 200, 200, 200),
    ("GET", "/users"): Row(200, 200, 200, 200),
    ("GET", "/users/{user_id}"): Row(200, 200, 200, 200),
    ("PATCH", "/users/{user_id}"): Row(
        401, 403, 403, 200, body=lambda c: {"email": f"moved{next(_counter)}@example.com"}
    ),
    # Galleries
    ("GET", "/users/{user_id}/images"): Row(200, 200, 200, 200),
    ("POST", "/users/{user_id}/images"): Row(401, 403, 201, 201, body=_new_image_url),
    ("GET", "/users/{user_id}/images/{image_id}"): Row(200, 200, 200, 200),
    ("PATCH", "/users/{user_id}/images/{image_id}"): Row(
        401, 403, 200, 200, body=lambda c: {"title": f"renamed {next(_counter)}"}
    ),
    ("DELETE", "/users/{user_id}/images/{image_id}"): Row(401, 403, 204, 204, fresh_image=True),
    ("POST", "/users/{user_id}/images/{image_id}/recheck"): Row(401, 403, 200, 200),
    # Media of a public image: anyone's.
    ("GET", "/users/{user_id}/images/{image_id}/raw"): Row(200, 200, 200, 200),
    ("GET", "/users/{user_id}/images/{image_id}/thumbnail"): Row(
        200, 200, 200, 200, params={"size": "256"}
    ),
    # Account lifecycle. Bodies carry bogus mailed tokens or a wrong password where a
    # successful call would destroy the actor's account.
    ("POST", "/accounts/refresh"): Row(
        401, 401, 401, 401, body=lambda c: {"refresh_token": "not-a-refresh-token"}
    ),
    ("POST", "/accounts/logout"): Row(401, 204, 204, 204, ends_sessions=True),
    ("POST", "/accounts/logout-all"): Row(401, 204, 204, 204, ends_sessions=True),
    ("POST", "/accounts/change-password"): Row(
        401,
        204,
        204,
        204,
        body=lambda c: {
            "old_password": PASSWORD,
            "password": PASSWORD,
            "password_confirm": PASSWORD,
        },
        ends_sessions=True,
    ),
    ("POST", "/accounts/send-reset-password-link"): Row(
        202, 202, 202, 202, body=lambda c: {"login": "nobody-at-all"}
    ),
    ("POST", "/accounts/reset-password"): Row(
        400,
        400,
        400,
        400,
        body=lambda c: {"token": "bogus", "password": PASSWORD, "password_confirm": PASSWORD},
    ),
    ("POST", "/accounts/verify-registration"): Row(
        400, 400, 400, 400, body=lambda c: {"token": "bogus"}
    ),
    ("POST", "/accounts/verify-email"): Row(400, 400, 400, 400, body=lambda c: {"token": "bogus"}),
    ("PATCH", "/accounts/profile"): Row(401, 200, 200, 200, body=lambda c: {}),
    ("DELETE", "/accounts/profile"): Row(
        401, 403, 403, 403, body=lambda c: {"password": "not-the-password"}
    ),
    ("POST", "/accounts/resend-verification"): Row(
        202, 202, 202, 202, body=lambda c: {"login": "nobody-at-all"}
    ),
    # Sessions: the path names the owner's current session; nobody else may end it.
    ("GET", "/accounts/sessions"): Row(401, 200, 200, 200),
    ("DELETE", "/accounts/sessions/{session_id}"): Row(401, 404, 204, 404, ends_sessions=True),
    # The pages for mailed links are public (the token is spent only by the API calls).
    ("GET", "/reset-password"): Row(200, 200, 200, 200),
    ("GET", "/verify-registration"): Row(200, 200, 200, 200),
    ("GET", "/verify-email"): Row(200, 200, 200, 200),
    ("GET", "/pages/assets/{name}"): Row(200, 200, 200, 200),
    # Operations: public probes and metrics (METRICS_ALLOWED_NETWORKS is empty in tests).
    ("GET", "/health/live"): Row(200, 200, 200, 200),
    ("GET", "/health/ready"): Row(200, 200, 200, 200),
    ("GET", "/metrics"): Row(200, 200, 200, 200),
    ("GET", "/docs/assets/{name}"): Row(200, 200, 200, 200),
    # The gallery page: public images only, whoever asks (tests/gallery/test_page.py).
    ("GET", "/u/{username}"): Row(200, 200, 200, 200),
    # Admin-wide images
    ("GET", "/images"): Row(401, 403, 403, 200),
    ("DELETE", "/images"): Row(401, 403, 403, 204),
    ("GET", "/images/health"): Row(401, 403, 403, 200),
    # FastAPI's own documentation routes are public.
    ("GET", "/openapi.json"): Row(200, 200, 200, 200),
    ("GET", "/docs"): Row(200, 200, 200, 200),
    ("GET", "/redoc"): Row(200, 200, 200, 200),
}

DENIAL_CODES = {
    401: {"not_authenticated", "invalid_token"},
    403: {"forbidden", "admin_required", "wrong_password"},
    # Another user's session id is "not among yours": the same 404 as an unknown one.
    404: {"image_not_found", "session_not_found"},
}

# The same calls on a private image of the owner's. Reads answer 404 to anyone but the
# owner and admins: to them the image does not exist. Writes keep the 403 of the permission
# check, which comes before any lookup and so answers the same for every id, existing,
# private or not (tests/images/test_visibility.py compares them).
PRIVATE_MATRIX: dict[tuple[str, str], Row] = {
    ("GET", "/users/{user_id}/images/{image_id}"): Row(404, 404, 200, 200),
    ("PATCH", "/users/{user_id}/images/{image_id}"): Row(
        401, 403, 200, 200, body=lambda c: {"title": f"renamed {next(_counter)}"}
    ),
    ("DELETE", "/users/{user_id}/images/{image_id}"): Row(401, 403, 204, 204, fresh_image=True),
    ("POST", "/users/{user_id}/images/{image_id}/recheck"): Row(401, 403, 200, 200),
    # Media without a signature (tests/images/test_media_access.py covers signatures).
    ("GET", "/users/{user_id}/images/{image_id}/raw"): Row(404, 404, 200, 200),
    ("GET", "/users/{user_id}/images/{image_id}/thumbnail"): Row(
        404, 404, 200, 200, params={"size": "256"}
    ),
}


def _routes(routes: Any) -> Iterator[tuple[str, set[str]]]:
    for route in routes:
        if hasattr(route, "effective_route_contexts"):  # an included router (FastAPI >= 0.13x)
            for context in route.effective_route_contexts():
                yield context.path, set(getattr(context, "methods", None) or ())
        elif isinstance(route, Mount):
            yield from ((route.path + p, m) for p, m in _routes(route.routes))
        elif isinstance(route, Route):
            yield route.path, set(route.methods or ())


def app_operations(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path) the app answers, HEAD aside (it mirrors GET): the routing table,
    including routes left out of the schema, plus every OpenAPI operation as a safety net."""
    operations = {(m, path) for path, methods in _routes(app.routes) for m in methods}
    for path, item in app.openapi()["paths"].items():
        operations |= {(method.upper(), path) for method in item}
    return {(method, path) for method, path in operations if method != "HEAD"}


def test_every_route_has_a_row_and_every_row_a_route() -> None:
    from app.main import create_app
    from tests.conftest import make_settings

    operations = app_operations(create_app(make_settings("sqlite+aiosqlite://")))
    missing = sorted(operations - MATRIX.keys())
    stale = sorted(MATRIX.keys() - operations)
    assert not missing, f"routes without an authorization row: {missing}"
    assert not stale, f"rows for routes that no longer exist: {stale}"


def test_every_image_route_has_a_private_row() -> None:
    image_routes = {key for key in MATRIX if "{image_id}" in key[1]}
    assert image_routes == PRIVATE_MATRIX.keys(), sorted(image_routes ^ PRIVATE_MATRIX.keys())


async def _fresh_image(ctx: Ctx, visibility: str = "public") -> int:
    owner = ctx.world.owner
    response = await ctx.client.post(
        f"/users/{owner.id}/images",
        json={**_new_image_url(ctx), "visibility": visibility},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    image_id: int = response.json()["id"]
    return image_id


async def _snapshot(app: FastAPI, ctx: Ctx) -> Any:
    admin = ctx.world.admin.headers
    users = (await ctx.client.get("/users", params={"limit": 200})).json()
    owner = (await ctx.client.get(f"/users/{ctx.world.owner.id}", headers=admin)).json()
    images = (await ctx.client.get("/images", params={"limit": 200}, headers=admin)).json()
    # Signed media URLs change with the clock's window, not with stored data.
    for image in images["items"]:
        image.pop("thumbnail_url")
        image.pop("raw_url")
    return await count_rows(app), users, owner, images


async def test_authorization_matrix(app: FastAPI, client: httpx.AsyncClient, world: World) -> None:
    operations = app_operations(app)
    assert operations == MATRIX.keys(), sorted(operations ^ MATRIX.keys())
    await _run_matrix(app, client, world, MATRIX, "public")


async def test_authorization_matrix_of_a_private_image(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    world.image_id = await _fresh_image(Ctx(client, world), "private")
    await _run_matrix(app, client, world, PRIVATE_MATRIX, "private")


async def _run_matrix(
    app: FastAPI,
    client: httpx.AsyncClient,
    world: World,
    matrix: dict[tuple[str, str], Row],
    visibility: str,
) -> None:
    ctx = Ctx(client, world)
    headers = {
        "anonymous": {},
        "other": world.other.headers,
        "owner": world.owner.headers,
        "admin": world.admin.headers,
    }
    mismatches: list[str] = []
    cells = 0
    for (method, template), row in sorted(matrix.items()):
        for actor in ACTORS:
            image_id = await _fresh_image(ctx, visibility) if row.fresh_image else world.image_id
            if "{image_id}" in template and not row.fresh_image:
                # Earlier cells (DELETE /images) may have removed the shared image.
                listing = await client.get(
                    f"/users/{world.owner.id}/images/{image_id}", headers=world.admin.headers
                )
                if listing.status_code == 404:
                    image_id = world.image_id = await _fresh_image(ctx, visibility)
            path = template.format(
                user_id=world.owner.id,
                image_id=image_id,
                session_id=jwt.get_unverified_claims(world.owner.token)["sid"],
                username=world.owner.username,
                name="pages.js" if template.startswith("/pages/") else "swagger-init.js",
            )
            kwargs: dict[str, Any] = {"headers": headers[actor]}
            if row.body is not None:
                kwargs["json"] = row.body(ctx)
            if row.params is not None:
                kwargs["params"] = row.params
            expected = row.expected(actor)
            before = await _snapshot(app, ctx) if expected >= 400 else None
            response = await client.request(method, path, **kwargs)
            cell = f"{method} {template} ({visibility} image) as {actor}"
            cells += 1
            if row.ends_sessions and actor != "anonymous" and response.is_success:
                account = getattr(world, actor)
                account.token = await login(client, account.username)
                headers[actor] = account.headers
            if response.status_code != expected:
                mismatches.append(f"{cell}: {response.status_code} != {expected}")
                continue
            if expected in DENIAL_CODES:
                body = response.json()
                if body.get("code") not in DENIAL_CODES[expected] or not body.get("detail"):
                    mismatches.append(f"{cell}: unexpected error body {body}")
                if before != await _snapshot(app, ctx):
                    mismatches.append(f"{cell}: a denied call changed stored data")
    assert not mismatches, "\n".join(mismatches)
    assert cells == len(matrix) * len(ACTORS)


async def test_email_is_shown_only_to_self_and_admins(
    client: httpx.AsyncClient, world: World
) -> None:
    path = f"/users/{world.owner.id}"
    seen: dict[str, bool] = {}
    for actor, account in (
        ("anonymous", None),
        ("other", world.other),
        ("owner", world.owner),
        ("admin", world.admin),
    ):
        response = await client.get(path, headers=account.headers if account else {})
        assert response.status_code == 200
        seen[actor] = "email" in response.json()
    assert seen == {"anonymous": False, "other": False, "owner": True, "admin": True}
