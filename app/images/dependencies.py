"""What an image request needs beyond its body: the image id, the URL checker, and a
gallery the caller may edit."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path

from app.accounts.dependencies import CurrentUser
from app.db import MAX_ID
from app.images.checker import ImageChecker
from app.images.service import EditableGallery, editable_gallery
from app.state import StateDep
from app.users.dependencies import UserIdPath


async def get_image_checker(state: StateDep) -> ImageChecker:
    return state.image_checker


ImageIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="The image's id.")]
ImageCheckerDep = Annotated[ImageChecker, Depends(get_image_checker)]


async def get_editable_gallery(user_id: UserIdPath, actor: CurrentUser) -> EditableGallery:
    """The gallery in the path, when the signed-in caller may change it."""
    return editable_gallery(actor, user_id)


EditableGalleryDep = Annotated[EditableGallery, Depends(get_editable_gallery)]
