"""What callers send and see about images."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

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


class ImageCreate(RequestModel):
    image_url: ImageUrl
    title: Title | None = None


class ImageUpdate(RequestModel):
    """Omitted fields stay as they are; `title: null` clears the title."""

    image_url: ImageUrl | None = None
    title: Title | None = None


class ImageRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    image_url: str
    title: str | None
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
