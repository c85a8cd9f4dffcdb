"""The short way of a signed-out gallery revalidation: 304 before routing.

A gallery page's 304 costs one indexed lookup of the gallery's version (app/images/service.py);
measured, the framework around that lookup (routing, eight dependencies, query validation, an
ORM session) cost more than the lookup and nearly as much as a whole page. This middleware,
the innermost, answers the commonest revalidation itself: `GET /users/{user_id}/images` with
`If-None-Match` and no `Authorization` (the public view, no signed media URLs). It reads the
version on a plain connection, makes the tag exactly as the route would
(`service.gallery_tag_parts`, bound to the same path and query), and answers 304 with the
route's caching headers when the tag is current. Anything else, a stale tag, a missing user
or a database error included, goes on to the route, which answers it fully (a stale tag is
marked, so the route does not look the version up again).

Every outer middleware (request id, access log, metrics, security headers) still sees the
request; it is counted under the route's template.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from app.db import MAX_ID
from app.http_caching import STALE_MARK, cache_headers, if_none_match_matches, request_target
from app.images.service import PUBLIC_VIEW, gallery_tag_parts
from app.state import app_state
from app.users.service import GALLERY_VERSION

GALLERY_ROUTE = "/users/{user_id}/images"
_GALLERY_PATH = re.compile(r"/users/([1-9][0-9]{0,18})/images")


class GalleryRevalidation:
    """ASGI middleware: 304 for a signed-out gallery page whose `If-None-Match` is current."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Per started app (tests start several): its engine without transactions, and the
        # route the metrics count these answers under.
        self._engines: tuple[AsyncEngine, AsyncEngine] | None = None
        self._route: BaseRoute | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        match = _GALLERY_PATH.fullmatch(scope["path"])
        if_none_match = _if_none_match(scope) if match else None
        if match is None or if_none_match is None or int(match[1]) > MAX_ID:
            await self.app(scope, receive, send)
            return
        headers = await self._not_modified(scope, int(match[1]), if_none_match)
        if headers is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self._gallery_route(scope)
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _not_modified(
        self, scope: Scope, user_id: int, if_none_match: str
    ) -> list[tuple[bytes, bytes]] | None:
        """The 304's headers when the client's copy is current, else None."""
        state = app_state(scope["app"])
        if self._engines is None or self._engines[0] is not state.engine:
            # Each statement on its own, as the route's read sessions run (`app.db`).
            self._engines = (
                state.engine,
                state.engine.execution_options(isolation_level="AUTOCOMMIT"),
            )
        try:
            async with self._engines[1].connect() as connection:
                version = (
                    await connection.execute(GALLERY_VERSION, {"owner_id": user_id})
                ).scalar()
        except SQLAlchemyError:
            return None  # the route answers, with its own error handling
        if version is None:
            return None
        parts = gallery_tag_parts(version, PUBLIC_VIEW, None)
        etag = state.entity_tags.tag(request_target(scope), *parts)
        if not if_none_match_matches(if_none_match, etag):
            scope[STALE_MARK] = True  # the route reads the page without looking again
            return None
        headers = cache_headers(etag, private=False, vary=True)
        return [(name.lower().encode(), value.encode()) for name, value in headers.items()]

    def _gallery_route(self, scope: Scope) -> BaseRoute | None:
        if self._route is None:
            routes: list[Any] = getattr(scope["app"], "routes", [])
            self._route = next(
                (r for r in routes if getattr(r, "path", None) == GALLERY_ROUTE), None
            )
        return self._route


def _if_none_match(scope: Scope) -> str | None:
    """`If-None-Match` (several lines joined as one list), None when absent or when the
    request is signed in (the route decides what a signed-in caller sees)."""
    values = []
    for name, value in scope["headers"]:
        if name == b"authorization":
            return None
        if name == b"if-none-match":
            values.append(value.decode("latin-1"))
    return ", ".join(values) if values else None
