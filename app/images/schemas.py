"""What callers send and see about images."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from app.images.visibility import Visibility
from app.schemas import RequestModel
from app.text import StorableStr

MAX_URL_LENGTH = 2048

ImageUrl = Annotated[
    StorableStr,
    StringConstraints(min_length=1, max_length=MAX_URL_LENGTH),
    Field(
        description="An http(s) URL of an image; the server checks that it really is one.",
        examples=["https://images.example.com/cat.png"],
    ),
]
Title = Annotated[
    StorableStr, StringConstraints(max_length=200), Field(description="An optional caption.")
]
VISIBILITY_DESCRIPTION = (
    "`public`: anyone sees the image. `private`: only its owner and admins do; to anyone "
    "else it does not exist (404 `image_not_found`)."
)


class ImageCreate(RequestModel):
    image_url: ImageUrl
    title: Title | None = None
    visibility: Visibility = Field(default=Visibility.PUBLIC, description=VISIBILITY_DESCRIPTION)


class ImageUpdate(RequestModel):
    """Omitted fields stay as they are; `title: null` clears the title."""

    image_url: ImageUrl | None = None
    title: Title | None = None
    visibility: Visibility | None = Field(default=None, description=VISIBILITY_DESCRIPTION)

    @field_validator("visibility")
    @classmethod
    def _visibility_not_null(cls, value: Visibility | None) -> Visibility:
        # Omitting it keeps the visibility; an explicit null is a mistake, not a change.
        if value is None:
            raise ValueError("must be `public` or `private`")
        return value


class ImageRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    image_url: str
    title: str | None
    visibility: Visibility = Field(description=VISIBILITY_DESCRIPTION)
    thumbnail_url: str = Field(
        description="Path of a 256-pixel WebP thumbnail, for an `<img>` tag. A private image's "
        "carries an expiring signature (MEDIA_URL_EXPIRE_SECONDS), so it works without a "
        "bearer header; a public image's is a plain, stable path.",
        examples=["/users/1/images/7/thumbnail?size=256"],
    )
    raw_url: str = Field(
        description="Path of the original image served through this server (never the "
        "third-party host), signed like `thumbnail_url` for a private image.",
        examples=["/users/1/images/7/raw"],
    )
    content_type: str = Field(
        description="The image's format as read from its bytes (or, with IMAGE_SNIFF off, "
        "as its server declared it).",
        examples=["image/png"],
    )
    size_bytes: int | None = Field(description="The file's size in bytes, when known.")
    width: int | None = Field(description="Width in pixels, when the check could read it.")
    height: int | None = Field(description="Height in pixels, when the check could read it.")
    checked_at: datetime = Field(description="When the URL was last checked.")
    created_at: datetime
    updated_at: datetime
