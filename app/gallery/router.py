"""GET /u/{username}: a user's public gallery as an HTML page (not part of the JSON API)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from app.db import SessionDep
from app.gallery import service
from app.gallery.pages import GalleryPages
from app.images.media_access import MediaUrlsDep
from app.pagination import CursorCodecDep, InvalidCursor
from app.state import StateDep
from app.users.errors import UserNotFound

# A page for people, not an API operation: left out of the OpenAPI document.
router = APIRouter(tags=["gallery"], include_in_schema=False)


async def get_gallery_pages(state: StateDep) -> GalleryPages:
    return state.gallery_pages


GalleryPagesDep = Annotated[GalleryPages, Depends(get_gallery_pages)]


@router.get("/u/{username}", response_class=HTMLResponse)
async def gallery_page(
    username: str,
    session: SessionDep,
    cursors: CursorCodecDep,
    media_urls: MediaUrlsDep,
    pages: GalleryPagesDep,
    cursor: str | None = None,
) -> HTMLResponse:
    """A user's public images as a grid of thumbnails, newest first; "Older" pages on."""
    try:
        page = await service.public_gallery_page(session, cursors, media_urls, username, cursor)
    except UserNotFound:
        return pages.user_not_found()
    except InvalidCursor:
        return pages.invalid_cursor(username)
    return pages.gallery(page)
