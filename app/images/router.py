"""Image endpoints: galleries under /users/{user_id}/images, and admin-wide /images."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from app.accounts.dependencies import AdminUser
from app.accounts.errors import AdminRequired, NotAuthenticated
from app.db import MAX_ID, SessionDep
from app.errors import InvalidInput, error_responses
from app.images import service
from app.images.dependencies import EditableGalleryDep, ImageCheckerDep, ImageIdPath
from app.images.errors import (
    IMAGE_CHECK_ERRORS,
    ImageChanged,
    ImageDuplicate,
    ImageNotFound,
    NotGalleryOwner,
)
from app.images.models import Image
from app.images.schemas import ImageCreate, ImageRead, ImageUpdate
from app.pagination import CursorCodecDep, InvalidCursor, Listing, Page, PageParamsDep
from app.users.dependencies import UserIdPath
from app.users.errors import UserNotFound

router = APIRouter(tags=["images"])

# Writes name `user_id` although `EditableGalleryDep` reads it too: declared here, the path's
# parameters keep their order in the OpenAPI document.

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
    responses=error_responses(UserNotFound, InvalidCursor),
)
async def list_user_images(
    user_id: UserIdPath, session: SessionDep, cursors: CursorCodecDep, page: PageParamsDep
) -> Listing[dict[str, Any]]:
    """A user's gallery, newest first. Galleries are public."""
    return await service.list_user_images(session, cursors, user_id, page)


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
    gallery: EditableGalleryDep,
) -> Image:
    """Add an image URL to the user's gallery (owner or admin). The server first checks
    that the URL is safe to fetch and that its bytes are an image of an allowed type."""
    return await service.create_image(session, checker, gallery, body)


@router.get(
    "/users/{user_id}/images/{image_id}",
    response_model=ImageRead,
    summary="Get one image",
    responses=error_responses(UserNotFound, ImageNotFound),
)
async def read_image(
    user_id: UserIdPath, image_id: ImageIdPath, session: SessionDep
) -> dict[str, Any]:
    """One image of a user's gallery."""
    return await service.read_user_image(session, user_id, image_id)


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
    gallery: EditableGalleryDep,
) -> Image:
    """Change an image's title or URL (owner or admin); a new URL is checked again."""
    return await service.update_image(session, checker, gallery, image_id, body)


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
    gallery: EditableGalleryDep,
) -> Image:
    """Run the URL check again (owner or admin) and store its results: format, size,
    width, height and `checked_at`. When the check fails the image is kept unchanged."""
    return await service.recheck_image(session, checker, gallery, image_id)


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
    responses=error_responses(NotAuthenticated, AdminRequired, InvalidCursor),
)
async def list_all_images(
    session: SessionDep,
    cursors: CursorCodecDep,
    page: PageParamsDep,
    _: AdminUser,
    user_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Only this user's images.")
    ] = None,
) -> Listing[dict[str, Any]]:
    """Every user's images, newest first."""
    return await service.list_all_images(session, cursors, page, user_id)


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
