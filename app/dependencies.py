"""Shared request dependencies for objects that live in the app's lifespan.

Dependencies are `async def` even when they do not await: FastAPI runs a plain `def`
dependency in a worker thread, a thread hop per request that showed up in the profile.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from app.images.checker import ImageChecker
from app.images.link_health import RecheckPolicy
from app.pagination import CursorCodec

MAX_ID = 2**63 - 1


async def get_cursor_codec(request: Request) -> CursorCodec:
    codec: CursorCodec = request.app.state.cursor_codec
    return codec


async def get_image_checker(request: Request) -> ImageChecker:
    checker: ImageChecker = request.app.state.image_checker
    return checker


async def get_recheck_policy(request: Request) -> RecheckPolicy:
    policy: RecheckPolicy = request.app.state.recheck_policy
    return policy


CursorCodecDep = Annotated[CursorCodec, Depends(get_cursor_codec)]
ImageCheckerDep = Annotated[ImageChecker, Depends(get_image_checker)]
RecheckPolicyDep = Annotated[RecheckPolicy, Depends(get_recheck_policy)]

UserIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="The user's id.")]
ImageIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="The image's id.")]
