"""The floor: the cheapest possible server for the read endpoints.

A bare ASGI callable over a raw asyncpg pool: no framework, no ORM, no validation layer.
It runs the same SQL as the app for each read endpoint and answers byte-identical JSON
(the harness fetches both and compares), so `app / floor` measures what the framework,
the ORM and our own code cost on top of the database round trip.

Authentication is the same work in kind: verify the HS256 signature of the bearer token
with the app's secret, then one primary-key lookup of the user.

Run: `BENCH_FLOOR_DSN=postgresql://... SECRET_KEY=... uvicorn bench.floor:app`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import asyncpg

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

# The app's authentication query: the token's session (unexpired) joined with its user.
USER_PRIVATE = (
    "SELECT u.id, u.username, u.email, u.is_admin, u.is_active, u.date_joined, u.last_login "
    "FROM users AS u JOIN account_sessions AS s ON s.user_id = u.id "
    "WHERE s.id = $1 AND s.expires_at > $2 AND u.id = $3"
)
USERS_PAGE = "SELECT id, username, date_joined FROM users WHERE id > $1 ORDER BY id LIMIT $2"
IMAGE_COLUMNS = (
    "id, user_id, image_url, title, visibility, content_type, size_bytes, width, height, "
    "checked_at, status, failure_count, last_error, content_changed_at, created_at, updated_at"
)
# Signed out, as the bench reads galleries: public images only.
GALLERY_PAGE = (
    f"SELECT {IMAGE_COLUMNS} FROM images WHERE user_id = $1 AND visibility = 'public' "  # noqa: S608
    "AND id < $2 ORDER BY id DESC LIMIT $3"
)
ALL_IMAGES_PAGE = f"SELECT {IMAGE_COLUMNS} FROM images WHERE id < $1 ORDER BY id DESC LIMIT $2"  # noqa: S608
ONE_IMAGE = f"SELECT {IMAGE_COLUMNS} FROM images WHERE id = $1 AND user_id = $2"  # noqa: S608
USER_EXISTS = "SELECT id FROM users WHERE id = $1"
NO_CURSOR = 2**63 - 1

GALLERY_PATH = re.compile(r"^/users/(\d+)/images$")
IMAGE_PATH = re.compile(r"^/users/(\d+)/images/(\d+)$")


class MediaSigner:
    """The app's media URL signatures (app/images/media_urls.py) for private images, so the
    admin listing's `thumbnail_url` and `raw_url` are byte-identical too."""

    def __init__(self, secret: bytes, expire_seconds: int) -> None:
        key = hmac.new(secret, b"gallery-api media-url signature v1", hashlib.sha256).digest()
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)
        self.expire_seconds = expire_seconds
        self._window = max(1, expire_seconds // 4)

    def urls(self, row: asyncpg.Record) -> tuple[str, str]:
        base = f"/users/{row['user_id']}/images/{row['id']}"
        thumbnail, raw = f"{base}/thumbnail?size=256", f"{base}/raw"
        if row["visibility"] == "public":
            return thumbnail, raw
        now = int(time.time())
        expires = now - now % self._window + self.expire_seconds
        created = (row["created_at"] - _EPOCH) // timedelta(microseconds=1)
        signed = []
        for variant in ("thumbnail:256", "raw"):
            mac = self._keyed.copy()
            mac.update(f"{row['user_id']}\n{row['id']}\n{created}\n{variant}\n{expires}".encode())
            signed.append(base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode())
        return (
            f"{thumbnail}&expires={expires}&signature={signed[0]}",
            f"{raw}?expires={expires}&signature={signed[1]}",
        )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def gallery_url(username: str) -> str:
    return "/u/" + quote(username, safe="")


class CursorCodec:
    """The app's cursor format (app/pagination.py), so `next_cursor` is byte-identical."""

    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"gallery-cursor\0" + secret).digest()

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:16]

    def encode(self, listing: str, last_id: int) -> str:
        payload = json.dumps([listing, last_id], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(payload + self._sign(payload)).rstrip(b"=").decode()

    def decode(self, listing: str, cursor: str) -> int | None:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            return None
        payload, signature = raw[:-16], raw[-16:]
        if len(raw) <= 16 or not hmac.compare_digest(signature, self._sign(payload)):
            return None
        found_listing, last_id = json.loads(payload)
        return int(last_id) if found_listing == listing else None


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def read_bearer_subject(header: bytes | None, key: bytes) -> tuple[int, int] | None:
    """The (session id, user id) of a valid, unexpired HS256 access token, else None."""
    if not header or not header.startswith(b"Bearer "):
        return None
    token = header[7:].decode("ascii", "replace")
    try:
        head, body, signature = token.split(".")
        expected = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _b64url_decode(signature)):
            return None
        claims = json.loads(_b64url_decode(body))
    except (ValueError, binascii.Error):
        return None
    if claims.get("exp", 0) < time.time():
        return None
    subject, session = claims.get("sub"), claims.get("sid")
    if not all(isinstance(v, str) and v.isdigit() for v in (subject, session)):
        return None
    return int(session), int(subject)


def _timestamp(value: datetime | None) -> str | None:
    # Pydantic writes UTC as "Z"; asyncpg returns timestamptz in UTC.
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _image(row: asyncpg.Record, media: MediaSigner) -> dict[str, Any]:
    thumbnail_url, raw_url = media.urls(row)
    return {
        "id": row["id"],
        "user_id": row["user_id"],
        "image_url": row["image_url"],
        "title": row["title"],
        "visibility": row["visibility"],
        "thumbnail_url": thumbnail_url,
        "raw_url": raw_url,
        "content_type": row["content_type"],
        "size_bytes": row["size_bytes"],
        "width": row["width"],
        "height": row["height"],
        "checked_at": _timestamp(row["checked_at"]),
        # Link health (issue 13), in ImageRead's order.
        "status": row["status"],
        "failure_count": row["failure_count"],
        "last_error": row["last_error"],
        "content_changed_at": _timestamp(row["content_changed_at"]),
        "created_at": _timestamp(row["created_at"]),
        "updated_at": _timestamp(row["updated_at"]),
    }


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class Floor:
    def __init__(self) -> None:
        self.token_key = b""
        self.cursors = CursorCodec(b"")
        self.media = MediaSigner(b"", 3600)
        self.pool: asyncpg.Pool | None = None

    async def startup(self) -> None:
        secret = os.environ["SECRET_KEY"].encode()
        self.token_key = secret
        self.cursors = CursorCodec(secret)
        self.media = MediaSigner(secret, int(os.environ.get("MEDIA_URL_EXPIRE_SECONDS", "3600")))
        size = int(os.environ.get("DATABASE_POOL_SIZE", "10"))
        self.pool = await asyncpg.create_pool(
            os.environ["BENCH_FLOOR_DSN"], min_size=size, max_size=size
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self.startup()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self.pool is not None:
                        await self.pool.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        status, body = await self.route(scope)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def route(self, scope: dict[str, Any]) -> tuple[int, bytes]:
        assert self.pool is not None
        path: str = scope["path"]
        query = dict(
            part.split("=", 1) for part in scope["query_string"].decode().split("&") if "=" in part
        )
        limit = min(int(query.get("limit", DEFAULT_LIMIT)), MAX_LIMIT)
        async with self.pool.acquire() as connection:
            if path == "/users/me":
                row = await self._authenticate(connection, scope)
                if row is None or not row["is_active"]:
                    return 401, b'{"detail":"invalid token","code":"invalid_token"}'
                return 200, _dumps(
                    {
                        "id": row["id"],
                        "username": row["username"],
                        "email": row["email"],
                        "is_admin": row["is_admin"],
                        "is_active": row["is_active"],
                        "date_joined": _timestamp(row["date_joined"]),
                        "last_login": _timestamp(row["last_login"]),
                        "gallery_url": gallery_url(row["username"]),
                    }
                )
            if path == "/users":
                after = self._cursor("users", query, default=0)
                rows = await connection.fetch(USERS_PAGE, after, limit + 1)
                items = [
                    {
                        "id": r["id"],
                        "username": r["username"],
                        "date_joined": _timestamp(r["date_joined"]),
                        "gallery_url": gallery_url(r["username"]),
                    }
                    for r in rows[:limit]
                ]
                return 200, self._page(items, rows, limit, "users")
            if path == "/images":
                row = await self._authenticate(connection, scope)
                if row is None or not row["is_active"] or not row["is_admin"]:
                    return 403, b'{"detail":"admins only","code":"admin_required"}'
                listing = "images:None"
                before = self._cursor(listing, query, default=NO_CURSOR)
                rows = await connection.fetch(ALL_IMAGES_PAGE, before, limit + 1)
                items = [_image(r, self.media) for r in rows[:limit]]
                return 200, self._page(items, rows, limit, listing)
            if match := GALLERY_PATH.match(path):
                owner = int(match.group(1))
                listing = f"user-images:{owner}"
                before = self._cursor(listing, query, default=NO_CURSOR)
                rows = await connection.fetch(GALLERY_PAGE, owner, before, limit + 1)
                if not rows and await connection.fetchval(USER_EXISTS, owner) is None:
                    return 404, b'{"detail":"No user has this id.","code":"user_not_found"}'
                items = [_image(r, self.media) for r in rows[:limit]]
                return 200, self._page(items, rows, limit, listing)
            if match := IMAGE_PATH.match(path):
                row = await connection.fetchrow(ONE_IMAGE, int(match.group(2)), int(match.group(1)))
                if row is None or row["visibility"] != "public":
                    return 404, b'{"detail":"not found","code":"image_not_found"}'
                return 200, _dumps(_image(row, self.media))
        return 404, b'{"detail":"not found","code":"not_found"}'

    async def _authenticate(
        self, connection: asyncpg.Connection, scope: dict[str, Any]
    ) -> asyncpg.Record | None:
        ids = read_bearer_subject(dict(scope["headers"]).get(b"authorization"), self.token_key)
        if ids is None:
            return None
        return await connection.fetchrow(USER_PRIVATE, ids[0], datetime.now(UTC), ids[1])

    def _cursor(self, listing: str, query: dict[str, str], *, default: int) -> int:
        cursor = query.get("cursor")
        found = self.cursors.decode(listing, cursor) if cursor else None
        return default if found is None else found

    def _page(
        self, items: list[dict[str, Any]], rows: list[asyncpg.Record], limit: int, listing: str
    ) -> bytes:
        next_cursor = (
            self.cursors.encode(listing, rows[limit - 1]["id"]) if len(rows) > limit else None
        )
        return _dumps({"items": items, "next_cursor": next_cursor})


app = Floor()
