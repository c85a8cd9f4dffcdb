"""What the gallery page shows: one page of a user's public images, newest first."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.images.media_urls import MediaUrls
from app.images.service import PUBLIC_GALLERY, gallery_listing
from app.pagination import CursorCodec, InvalidCursor, PageParams, paginate
from app.users.errors import UserNotFound
from app.users.identity_keys import fold_username, username_key
from app.users.models import User

# Thumbnails per page: four rows of a six-column grid.
GALLERY_PAGE_SIZE = 24
# What a username's folded form can look like (app.text.Username): anything else names
# no one and is answered without a query (a NUL would even fail on PostgreSQL). Names are
# at most 150 characters; case-folding may lengthen one, never fourfold.
_USERNAME_KEY_SHAPE = re.compile(r"^[\w.@+-]+$")
_MAX_USERNAME_LENGTH = 600

# The API refuses longer cursors before decoding them; so does the page.
_MAX_CURSOR_LENGTH = 512

_OWNER = select(User.id, User.username).where(User.username_key == bindparam("key"))


@dataclass(frozen=True, slots=True)
class GalleryPage:
    """One page of a user's public gallery: images newest first, and the cursor of the
    next (older) page when there is one."""

    user_id: int
    username: str
    images: list[dict[str, Any]]
    older_cursor: str | None
    is_first_page: bool


async def public_gallery_page(
    session: AsyncSession,
    cursors: CursorCodec,
    media_urls: MediaUrls,
    username: str,
    cursor: str | None,
) -> GalleryPage:
    """A page of `username`'s public images (private ones never, whoever asks): the same
    keyset listing, and the same cursors, as `GET /users/{user_id}/images` signed out.
    `UserNotFound` for an unknown user; `InvalidCursor` for a cursor not of this gallery."""
    folded = fold_username(username) if len(username) <= _MAX_USERNAME_LENGTH else ""
    if not _USERNAME_KEY_SHAPE.fullmatch(folded):
        raise UserNotFound()
    key = username_key(username)
    if cursor is not None and len(cursor) > _MAX_CURSOR_LENGTH:
        raise InvalidCursor()
    owner = (await session.execute(_OWNER, {"key": key})).one_or_none()
    if owner is None:
        raise UserNotFound()
    images = await paginate(
        session,
        PUBLIC_GALLERY,
        {"owner_id": owner.id},
        listing=gallery_listing(owner.id),
        page=PageParams(limit=GALLERY_PAGE_SIZE, cursor=cursor, cursors=cursors),
    )
    rows = list(images.items)
    media_urls.attach(rows)
    return GalleryPage(owner.id, owner.username, rows, images.next_cursor, cursor is None)
