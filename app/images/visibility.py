"""Who may see an image: public images are everyone's, private ones their owner's and admins'."""

from __future__ import annotations

from enum import StrEnum

from app.users.models import User


class Visibility(StrEnum):
    """`public`: anyone sees the image. `private`: only its owner and admins do; to anyone
    else it does not exist (404 `image_not_found`, never 403, so its id reveals nothing)."""

    PUBLIC = "public"
    PRIVATE = "private"


def may_see_private_images(viewer: User | None, owner_id: int) -> bool:
    """Whether `viewer` (None: anonymous) sees the private images of user `owner_id`."""
    return viewer is not None and (viewer.id == owner_id or viewer.is_admin)
