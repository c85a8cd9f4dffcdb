"""Keyset pagination: signed, opaque cursors and the `Page` envelope."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy import BigInteger, Integer, Select, bindparam
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import KeyedColumnElement

from app.db import MAX_ID
from app.errors import InvalidInput
from app.state import app_state
from app.text import StorableStr

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


class InvalidCursor(InvalidInput):
    code = "invalid_cursor"
    detail = "The cursor is not valid for this listing; start again without a cursor."


class Page(BaseModel, Generic[T]):
    """One page of a listing; pass `next_cursor` back as `cursor` to get the next page."""

    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Listing(Generic[R]):
    """One page as the services return it: rows, not yet validated into `Page[...]`.

    Validated once on the way out against the route's page model, reading attributes: by
    FastAPI against `response_model` (gallery pages), or by `Revalidation.content` (the
    content-tagged lists), so rows are never turned into ORM objects or models twice.
    """

    items: Sequence[R]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class PageParams:
    """The page a listing is asked for: `limit` and `cursor` as FastAPI validated them (a
    dataclass: nothing to re-validate), and the codec that reads that cursor and signs the
    next one."""

    limit: int
    cursor: str | None
    cursors: CursorCodec


# The query parameters every listing takes, declared on the listing routes themselves (a
# dependency around them cost another solve per page, app/reads.py); `Read.page(limit,
# cursor)` makes the `PageParams`.
LimitQuery = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
CursorQuery = Annotated[
    StorableStr | None,
    Query(max_length=512, description="`next_cursor` from the previous page."),
]


class CursorCodec:
    """Encodes the last id of a page, bound to its listing and signed, so a cursor
    cannot be forged, edited or replayed against another listing."""

    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"gallery-cursor\0" + secret).digest()

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:16]

    def encode(self, listing: str, last_id: int) -> str:
        payload = json.dumps([listing, last_id], separators=(",", ":")).encode()
        token = payload + self._sign(payload)
        return base64.urlsafe_b64encode(token).rstrip(b"=").decode()

    def decode(self, listing: str, cursor: str) -> int:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError) as exc:
            raise InvalidCursor() from exc
        payload, signature = raw[:-16], raw[-16:]
        if len(raw) <= 16 or not hmac.compare_digest(signature, self._sign(payload)):
            raise InvalidCursor()
        try:
            cursor_listing, last_id = json.loads(payload)
        except (ValueError, TypeError) as exc:
            raise InvalidCursor() from exc
        if cursor_listing != listing or not isinstance(last_id, int) or not 0 < last_id <= MAX_ID:
            raise InvalidCursor()
        return last_id


@dataclass(frozen=True, slots=True)
class Keyset:
    """A listing's statements, built once (module level): its first page, and the page
    after a cursor. The page size and the cursor's id are bound per request, so no request
    rebuilds or re-keys the SQL (that was 5% of a page's CPU)."""

    first: Select[Any]
    after: Select[Any]
    id_key: str


def keyset(query: Select[Any], *, id_column: KeyedColumnElement[int], newest_first: bool) -> Keyset:
    """The `Keyset` of `query` ordered by `id_column`, which the query must select."""
    limit = bindparam("page_limit", type_=Integer)
    after_id = bindparam("after_id", type_=BigInteger)
    order = id_column.desc() if newest_first else id_column.asc()
    after = id_column < after_id if newest_first else id_column > after_id
    return Keyset(
        first=query.order_by(order).limit(limit),
        after=query.where(after).order_by(order).limit(limit),
        id_key=id_column.key,
    )


def page_statement(
    listing_query: Keyset,
    parameters: dict[str, Any],
    *,
    listing: str,
    page: PageParams,
) -> tuple[Select[Any], dict[str, Any]]:
    """The statement of one page of a keyset listing and its bound values (one more row
    than the page holds: it tells whether a next page exists)."""
    values = {**parameters, "page_limit": page.limit + 1}
    statement = listing_query.first
    if page.cursor is not None:
        values["after_id"] = page.cursors.decode(listing, page.cursor)
        statement = listing_query.after
    return statement, values


async def paginate(
    session: AsyncSession,
    listing_query: Keyset,
    parameters: dict[str, Any],
    *,
    listing: str,
    page: PageParams,
) -> Listing[dict[str, Any]]:
    """One page of a keyset listing, each row as a dict of its columns: every page costs
    the same as the first. `parameters` are the query's own bound values."""
    statement, values = page_statement(listing_query, parameters, listing=listing, page=page)
    result = await session.execute(statement, values)
    # Plain dicts: pydantic validates them several times faster than `Row` attributes.
    keys = tuple(result.keys())
    rows = [dict(zip(keys, row, strict=True)) for row in result]
    if len(rows) <= page.limit:
        return Listing(rows, None)
    rows = rows[: page.limit]
    return Listing(rows, page.cursors.encode(listing, rows[-1][listing_query.id_key]))


async def get_cursor_codec(request: Request) -> CursorCodec:
    # From the request, not a `StateDep` sub-dependency (see `app.db._request_session`).
    return app_state(request.app).cursor_codec


CursorCodecDep = Annotated[CursorCodec, Depends(get_cursor_codec)]
