"""Image endpoints: galleries under /users/{user_id}/images, and admin-wide /images."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Query, Response, status

from app.accounts.dependencies import AdminRead, AdminUser, OptionalUserRead
from app.accounts.errors import AdminRequired, InvalidToken, NotAuthenticated
from app.db import MAX_ID, SessionDep
from app.errors import InvalidInput, error_responses
from app.http_caching import NOT_MODIFIED_RESPONSE
from app.images import service
from app.images.dependencies import (
    EditableGalleryDep,
    ImageCheckerDep,
    ImageIdPath,
    RecheckPolicyDep,
    ThumbnailMakerDep,
)
from app.images.errors import (
    IMAGE_CHECK_ERRORS,
    ImageChanged,
    ImageDuplicate,
    ImageNotFound,
    NotGalleryOwner,
)
from app.images.media_access import MediaUrlsDep
from app.images.schemas import ImageCreate, ImageHealth, ImageRead, ImageUpdate
from app.pagination import (
    DEFAULT_LIMIT,
    CursorQuery,
    InvalidCursor,
    LimitQuery,
    Listing,
    Page,
)
from app.users.dependencies import UserIdPath
from app.users.errors import UserNotFound

router = APIRouter(tags=["images"])

# Reads work signed out; signed in as the owner or an admin they also show private images.
# FastAPI appends this to the bearer scheme's entry: "the token, or nothing".
OPTIONAL_SIGN_IN: dict[str, Any] = {"security": [{}]}

# Writes name `user_id` although `EditableGalleryDep` reads it too: declared here, the path's
# parameters keep their order in the OpenAPI document.

StatusFilter = Annotated[
    Literal["ok", "failing", "broken"] | None,
    Query(description="Only images with this link status."),
]

_WRITE_ERRORS = error_responses(
    NotAuthenticated,
    NotGalleryOwner,
    UserNotFound,
    ImageNotFound,
    ImageDuplicate,
    InvalidInput,
    *IMAGE_CHECK_ERRORS,
)


@router.get(
    "/users/{user_id}/images",
    response_model=Page[ImageRead],
    summary="List a user's images",
    openapi_extra=OPTIONAL_SIGN_IN,
    responses=NOT_MODIFIED_RESPONSE | error_responses(InvalidToken, UserNotFound, InvalidCursor),
)
async def list_user_images(
    user_id: UserIdPath,
    read: OptionalUserRead,
    status: StatusFilter = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Listing[dict[str, Any]] | Response:
    """A user's gallery, newest first, optionally only the images with one link status:
    public images for everyone, private ones too for the owner and admins. Revalidate with
    `If-None-Match`: a current copy is answered 304 after one lookup."""
    return read.revalidation.answer(
        await service.list_user_images(
            read.session,
            read.media_urls,
            read.revalidation,
            read.viewer,
            user_id,
            read.page(limit, cursor),
            status,
        )
    )


@router.post(
    "/users/{user_id}/images",
    status_code=status.HTTP_201_CREATED,
    response_model=ImageRead,
    summary="Add an image to a gallery",
    responses=_WRITE_ERRORS,
)
async def create_image(
    user_id: UserIdPath,
    body: ImageCreate,
    session: SessionDep,
    checker: ImageCheckerDep,
    policy: RecheckPolicyDep,
    media_urls: MediaUrlsDep,
    gallery: EditableGalleryDep,
    thumbnails: ThumbnailMakerDep,
    background: BackgroundTasks,
) -> dict[str, Any]:
    """Add an image URL to the user's gallery (owner or admin), public unless `visibility`
    says `private`. The server first checks that the URL is safe to fetch and that its
    bytes are an image of an allowed type; its thumbnails are made in the background after
    the answer."""
    image = await service.create_image(session, checker, policy, media_urls, gallery, body)
    background.add_task(thumbnails.schedule, image["id"])  # runs once the 201 is sent
    return image


@router.get(
    "/users/{user_id}/images/{image_id}",
    response_model=ImageRead,
    summary="Get one image",
    openapi_extra=OPTIONAL_SIGN_IN,
    responses=NOT_MODIFIED_RESPONSE | error_responses(InvalidToken, UserNotFound, ImageNotFound),
)
async def read_image(
    user_id: UserIdPath, image_id: ImageIdPath, read: OptionalUserRead
) -> Response:
    """One image of a user's gallery; a private one only for its owner and admins."""
    image = await service.read_user_image(
        read.session, read.media_urls, read.viewer, user_id, image_id
    )
    return read.revalidation.content(image, ImageRead, private=read.viewer is not None)


@router.patch(
    "/users/{user_id}/images/{image_id}",
    response_model=ImageRead,
    summary="Change an image",
    responses=_WRITE_ERRORS,
)
async def update_image(
    user_id: UserIdPath,
    image_id: ImageIdPath,
    body: ImageUpdate,
    session: SessionDep,
    checker: ImageCheckerDep,
    policy: RecheckPolicyDep,
    media_urls: MediaUrlsDep,
    gallery: EditableGalleryDep,
    thumbnails: ThumbnailMakerDep,
    background: BackgroundTasks,
) -> dict[str, Any]:
    """Change an image's title, visibility or URL (owner or admin); a new URL is checked
    again and the image's thumbnails are made again from it."""
    image = await service.update_image(
        session, checker, policy, media_urls, gallery, image_id, body
    )
    if body.image_url is not None:
        background.add_task(thumbnails.schedule, image["id"])
    return image


@router.post(
    "/users/{user_id}/images/{image_id}/recheck",
    response_model=ImageRead,
    summary="Check an image's URL again",
    responses=error_responses(
        NotAuthenticated,
        NotGalleryOwner,
        UserNotFound,
        ImageNotFound,
        ImageChanged,
        *IMAGE_CHECK_ERRORS,
    ),
)
async def recheck_image(
    user_id: UserIdPath,
    image_id: ImageIdPath,
    session: SessionDep,
    checker: ImageCheckerDep,
    policy: RecheckPolicyDep,
    media_urls: MediaUrlsDep,
    thumbnails: ThumbnailMakerDep,
    background: BackgroundTasks,
    gallery: EditableGalleryDep,
) -> dict[str, Any]:
    """Run the URL check again (owner or admin) and store its results: format, size,
    width, height, `checked_at` and status `ok`; new bytes also set `content_changed_at`
    and replace the thumbnails. When the check fails, the error is the answer and the
    image counts one more failure (`status`, `failure_count`, `last_error`); its metadata
    is kept."""
    image = await service.recheck_image(session, checker, policy, media_urls, gallery, image_id)
    # Thumbnails a recheck of new bytes dropped are made again (a no-op when they exist).
    background.add_task(thumbnails.schedule, image["id"])
    return image


@router.delete(
    "/users/{user_id}/images/{image_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete an image",
    responses=error_responses(NotAuthenticated, NotGalleryOwner, UserNotFound, ImageNotFound),
)
async def delete_image(
    user_id: UserIdPath, image_id: ImageIdPath, session: SessionDep, gallery: EditableGalleryDep
) -> None:
    """Remove an image from a gallery (owner or admin)."""
    await service.delete_image(session, gallery, image_id)


@router.get(
    "/images",
    response_model=Page[ImageRead],
    summary="List all images (admin)",
    responses=NOT_MODIFIED_RESPONSE
    | error_responses(NotAuthenticated, AdminRequired, InvalidCursor),
)
async def list_all_images(
    read: AdminRead,
    user_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Only this user's images.")
    ] = None,
    status: StatusFilter = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Response:
    """Every user's images, private ones included, newest first, optionally one user's and
    one link status."""
    page = read.page(limit, cursor)
    images = await service.list_all_images(read.session, read.media_urls, page, user_id, status)
    return read.revalidation.content(images, Page[ImageRead], private=True)


@router.get(
    "/images/health",
    response_model=ImageHealth,
    summary="Link health of all images (admin)",
    responses=error_responses(NotAuthenticated, AdminRequired),
)
async def image_health(session: SessionDep, _: AdminUser) -> service.LinkHealthSummary:
    """How many images are ok, failing and broken, how many are due for a check, and how
    many seconds the longest-waiting one has been due."""
    return await service.link_health_summary(session)


@router.delete(
    "/images",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete every image (admin)",
    responses=error_responses(NotAuthenticated, AdminRequired),
)
async def delete_all_images(session: SessionDep, _: AdminUser) -> None:
    """Remove every image of every user."""
    await service.delete_all_images(session)
