"""The thumbnail route's dependency: the image, checked by the media access rule, and its
stored thumbnail of the asked size, in one query (serving a stored thumbnail must cost no
more than reading the image's JSON)."""

# No `from __future__ import annotations`: FastAPI reads this dependency's annotations.

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query
from sqlalchemy import and_, bindparam, select

from app.accounts.dependencies import OptionalUser
from app.config import Settings
from app.db import MAX_ID, SessionDep
from app.images.dependencies import ImageIdPath
from app.images.errors import ImageNotFound, ThumbnailSizeInvalid
from app.images.media_access import ExpiresQuery, SignatureQuery, may_read_media
from app.images.media_urls import MediaVariant
from app.images.models import Image, Thumbnail
from app.images.thumbnails import StoredThumbnail, ThumbnailSource
from app.state import StateDep
from app.users.dependencies import UserIdPath
from app.users.service import ensure_user_exists

_images = Image.__table__.c
_thumbnails = Thumbnail.__table__
# Core columns only (no ORM entity or attribute): the statement then runs without the ORM's
# compile and result stages, which cost this route measurably more than the JSON read.
_IMAGE_WITH_THUMBNAIL = (
    select(
        *_images,
        _thumbnails.c.etag.label("thumbnail_etag"),
        _thumbnails.c.content.label("thumbnail_content"),
        _thumbnails.c.error_code.label("thumbnail_error"),
    )
    .select_from(
        Image.__table__.outerjoin(
            _thumbnails,
            and_(_thumbnails.c.image_id == _images.id, _thumbnails.c.size == bindparam("size")),
        )
    )
    .where(_images.id == bindparam("image_id"), _images.user_id == bindparam("user_id"))
)


SizeQuery = Annotated[
    int, Query(description="The longest side in pixels: one of THUMBNAIL_SIZES (256, 1024).")
]


def thumbnail_variant(settings: Settings, size: int) -> MediaVariant:
    """The thumbnail a request asks for, when its size is one the server makes."""
    if size not in settings.thumbnail_sizes:
        offered = ", ".join(str(value) for value in settings.thumbnail_sizes)
        raise ThumbnailSizeInvalid(f"Thumbnails are made in these sizes only: {offered}.")
    return MediaVariant.thumbnail(size)


@dataclass(frozen=True)
class ThumbnailRequest:
    """A thumbnail request the media access rule let through."""

    image: dict[str, Any]  # every column of the image
    size: int
    stored: StoredThumbnail | None  # None: not made yet

    @property
    def source(self) -> ThumbnailSource:
        return ThumbnailSource.of(self.image)


async def thumbnail_request(
    user_id: UserIdPath,
    image_id: ImageIdPath,
    size: SizeQuery,
    session: SessionDep,
    viewer: OptionalUser,
    state: StateDep,
    expires: ExpiresQuery = None,
    signature: SignatureQuery = None,
) -> ThumbnailRequest:
    """The image and its stored thumbnail, if this request may read them; `ImageNotFound`
    (or `UserNotFound`) otherwise, exactly as `media_access.media_image` answers. (One
    dependency with the state, not one each for the size, the settings and the URL signer:
    every dependency costs FastAPI a little on a route that must be as cheap as a JSON read.)"""
    variant = thumbnail_variant(state.settings, size)
    media_urls = state.media_urls
    assert variant.size is not None
    image: dict[str, Any] | None = None
    if 0 < image_id <= MAX_ID and 0 < user_id <= MAX_ID:
        parameters = {"image_id": image_id, "user_id": user_id, "size": variant.size}
        result = await session.execute(_IMAGE_WITH_THUMBNAIL, parameters)
        row = result.mappings().one_or_none()
        image = None if row is None else dict(row)
    if image is None or not may_read_media(
        image, media_urls, viewer, variant, expires=expires, signature=signature
    ):
        await ensure_user_exists(session, user_id)
        raise ImageNotFound()
    etag = image.pop("thumbnail_etag")
    content = image.pop("thumbnail_content")
    error_code = image.pop("thumbnail_error")
    stored = None if etag is None else StoredThumbnail(etag, content, error_code)
    return ThumbnailRequest(image, variant.size, stored)


ThumbnailRequestDep = Annotated[ThumbnailRequest, Depends(thumbnail_request)]
