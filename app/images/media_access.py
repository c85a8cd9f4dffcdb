"""The media access rule: which requests may read an image's bytes (original or thumbnail).

A public image's media is anyone's. A private image's media needs one of:
- the bearer token of its owner or of an admin, or
- a valid, unexpired signature for that image and that variant (`?expires=...&signature=...`,
  as `raw_url` and `thumbnail_url` carry them), so an `<img>` tag works without a header.
Anything else answers 404 `image_not_found`, exactly as an image that does not exist: a
private image's id reveals nothing. An invalid bearer token is a 401 `invalid_token`, as on
every route, decided before the image is looked at.

Routes take the image through a dependency made by `media_image`, given a dependency that
says which variant the request asks for:

    async def raw_variant() -> MediaVariant:
        return MediaVariant.raw()

    @router.get("/users/{user_id}/images/{image_id}/raw", responses=MEDIA_ACCESS_ERRORS)
    async def read_raw(image: Annotated[Image, Depends(media_image(raw_variant))]) -> ...:

(`RawMediaImage` is exactly that.) A thumbnail route passes a dependency that reads and
validates its `size` query parameter and returns `MediaVariant.thumbnail(size)`; FastAPI
calls it once per request, so the route can take the same dependency for the size too.

The dependency costs one query (two with a bearer token: the token's session is checked),
plus one to tell a missing user from a missing image when the answer is a 404. The request's
session is released when the route returns, so a route that streams bytes afterwards holds
no database connection while it does.
"""

# No `from __future__ import annotations` here: `media_image` builds its dependency inside a
# function, and FastAPI must see the real annotation objects of that inner function.

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.dependencies import OptionalUser
from app.accounts.errors import InvalidToken
from app.db import MAX_ID, SessionDep
from app.errors import AppError
from app.images.dependencies import ImageIdPath
from app.images.errors import ImageNotFound
from app.images.media_urls import MediaSubject, MediaUrls, MediaVariant
from app.images.models import Image
from app.images.visibility import Visibility, may_see_private_images
from app.state import app_state
from app.users.dependencies import UserIdPath
from app.users.errors import UserNotFound
from app.users.models import User
from app.users.service import ensure_user_exists

# What a media route documents in its OpenAPI `responses` for this rule.
MEDIA_ACCESS_ERRORS: tuple[type[AppError], ...] = (InvalidToken, UserNotFound, ImageNotFound)


async def get_media_urls(request: Request) -> MediaUrls:
    # From the request, not a `StateDep` sub-dependency (see `app.db._request_session`).
    return app_state(request.app).media_urls


MediaUrlsDep = Annotated[MediaUrls, Depends(get_media_urls)]

# Free text on purpose: a malformed value is no signature at all (404 for a private image,
# ignored for a public one), never a 422 that would treat a private image differently.
ExpiresQuery = Annotated[
    str | None,
    Query(description="With `signature`: when this signed media URL expires (Unix seconds)."),
]
SignatureQuery = Annotated[
    str | None,
    Query(description="Signature of a private image's media URL, as `raw_url` carries it."),
]

_MEDIA_IMAGE = select(Image).where(
    Image.id == bindparam("image_id"), Image.user_id == bindparam("user_id")
)


async def authorize_media(
    session: AsyncSession,
    media_urls: MediaUrls,
    viewer: User | None,
    user_id: int,
    image_id: int,
    variant: MediaVariant,
    *,
    expires: str | None = None,
    signature: str | None = None,
) -> Image:
    """The image whose `variant` this request may read; `ImageNotFound` when it does not
    exist, is someone else's, or is private and neither `viewer` nor the signature opens it
    (`UserNotFound` when the user does not exist)."""
    image = None
    if 0 < image_id <= MAX_ID and 0 < user_id <= MAX_ID:
        parameters = {"image_id": image_id, "user_id": user_id}
        image = (await session.execute(_MEDIA_IMAGE, parameters)).scalar_one_or_none()
    if image is not None and may_read_media(
        image, media_urls, viewer, variant, expires=expires, signature=signature
    ):
        return image
    await ensure_user_exists(session, user_id)
    raise ImageNotFound()


def may_read_media(
    image: Image | Mapping[str, Any],
    media_urls: MediaUrls,
    viewer: User | None,
    variant: MediaVariant,
    *,
    expires: str | None = None,
    signature: str | None = None,
) -> bool:
    """The rule itself, for an image already loaded (an `Image`, or a row with its
    `user_id`, `id`, `created_at` and `visibility`): whether this request may read
    `variant` of it. A route that loads the image with more in the same query (the
    thumbnail route loads the stored thumbnail too) applies it through this."""
    if isinstance(image, Mapping):
        visibility, owner_id = image["visibility"], image["user_id"]
    else:
        visibility, owner_id = image.visibility, image.user_id
    return (
        visibility == Visibility.PUBLIC
        or may_see_private_images(viewer, owner_id)
        or media_urls.signer.verify(MediaSubject.of(image), variant, expires, signature)
    )


def media_image(
    variant: Callable[..., Awaitable[MediaVariant]],
) -> Callable[..., Awaitable[Image]]:
    """A dependency that yields the image a media request may read, for the variant the
    dependency `variant` names (see the module's docstring)."""

    async def dependency(
        user_id: UserIdPath,
        image_id: ImageIdPath,
        requested: Annotated[MediaVariant, Depends(variant)],
        session: SessionDep,
        viewer: OptionalUser,
        media_urls: MediaUrlsDep,
        expires: ExpiresQuery = None,
        signature: SignatureQuery = None,
    ) -> Image:
        return await authorize_media(
            session,
            media_urls,
            viewer,
            user_id,
            image_id,
            requested,
            expires=expires,
            signature=signature,
        )

    return dependency


async def raw_variant() -> MediaVariant:
    """The variant of a request for the original bytes."""
    return MediaVariant.raw()


RawMediaImage = Annotated[Image, Depends(media_image(raw_variant))]
"""The image a `/raw` request may read (see the module's docstring)."""
