"""What an image request needs beyond its body: the image id, the URL checker."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path

from app.db import MAX_ID
from app.images.checker import ImageChecker
from app.state import StateDep


async def get_image_checker(state: StateDep) -> ImageChecker:
    return state.image_checker


ImageIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="The image's id.")]
ImageCheckerDep = Annotated[ImageChecker, Depends(get_image_checker)]
