"""Media endpoints: an image's original through the proxy, and its thumbnails.

Both read the image through the media access rule (`media_access`): public images are
anyone's; a private one needs its owner's or an admin's bearer token or a valid signature
for that image and variant; anything else is a 404 as for an image that does not exist.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response

from app.db import SessionDep
from app.errors import error_responses
from app.http_caching import NOT_MODIFIED_RESPONSE, if_none_match_matches
from app.images.dependencies import ImageCheckerDep
from app.images.errors import (
    ImageTooLarge,
    ImageUndecodable,
    ImageUpstreamUnavailable,
    ThumbnailSizeInvalid,
)
from app.images.media_access import MEDIA_ACCESS_ERRORS, RawMediaImage
from app.images.originals import OriginalResponse
from app.images.thumbnail_access import ThumbnailRequestDep
from app.images.visibility import Visibility
from app.state import SettingsDep, app_state

router = APIRouter(tags=["media"])

# A bearer token is one way in, not a requirement: a public image needs nothing and a
# private one opens with its signature too. FastAPI appends this to the bearer scheme's
# entry, so the schema says "the token, or nothing" (as the images router's reads do).
OPTIONAL_SIGN_IN: dict[str, Any] = {"security": [{}]}

THUMBNAIL_MEDIA_TYPE = "image/webp"


_IMAGE_BYTES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}}
}


@router.get(
    "/users/{user_id}/images/{image_id}/raw",
    response_class=Response,
    summary="Get an image's original through the server",
    openapi_extra=OPTIONAL_SIGN_IN,
    responses={
        **_IMAGE_BYTES,
        **error_responses(*MEDIA_ACCESS_ERRORS, ImageTooLarge, ImageUpstreamUnavailable),
    },
)
async def read_original(
    image: RawMediaImage, checker: ImageCheckerDep, settings: SettingsDep
) -> Response:
    """The original bytes, fetched from the image's host again by the URL check's rules
    and streamed: `Content-Type` as sniffed from the bytes, nothing of the host's headers,
    at most IMAGE_PROXY_MAX_BYTES (a larger file is cut off)."""
    return OriginalResponse(checker, image.image_url, settings.image_proxy_max_bytes)


@router.get(
    "/users/{user_id}/images/{image_id}/thumbnail",
    response_class=Response,
    summary="Get an image's thumbnail",
    openapi_extra=OPTIONAL_SIGN_IN,
    responses={
        200: {
            "content": {THUMBNAIL_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}
        },
        **NOT_MODIFIED_RESPONSE,
        **error_responses(
            *MEDIA_ACCESS_ERRORS,
            ThumbnailSizeInvalid,
            ImageTooLarge,
            ImageUndecodable,
            ImageUpstreamUnavailable,
        ),
    },
)
async def read_thumbnail(
    thumbnail: ThumbnailRequestDep,
    session: SessionDep,
    request: Request,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """A WebP of the image, its longest side at most `size`, upright, without metadata;
    made on the first request if it was not made yet. Revalidate with `If-None-Match`."""
    # The maker straight from the app's state, not through a dependency: this route must
    # cost no more than the image's JSON read, and each dependency costs a little.
    maker = app_state(request.app).thumbnails
    stored = await maker.thumbnail(session, thumbnail.source, thumbnail.size, thumbnail.stored)
    content = stored.raise_if_failed()
    etag = f'"{stored.etag}"'
    public = thumbnail.image["visibility"] == Visibility.PUBLIC
    headers = {"ETag": etag, "Cache-Control": "public, max-age=86400" if public else "private"}
    if if_none_match_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(content, media_type=THUMBNAIL_MEDIA_TYPE, headers=headers)
