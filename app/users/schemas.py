"""What callers send and see about users."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, EmailStr, Field, computed_field

from app.schemas import RequestModel
from app.users.identity_keys import Username

GALLERY_PATH_PREFIX = "/u/"
_GALLERY_URL_DESCRIPTION = "Path of the user's public gallery page (HTML, for browsers)."


def gallery_path(username: str) -> str:
    """The path of `username`'s gallery page (`GET /u/{username}`)."""
    return GALLERY_PATH_PREFIX + quote(username, safe="")


class UserPublic(BaseModel):
    """What anyone may see about a user: no email."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    date_joined: datetime

    @computed_field(description=_GALLERY_URL_DESCRIPTION, examples=["/u/alice"])  # type: ignore[prop-decorator]
    @property
    def gallery_url(self) -> str:
        return gallery_path(self.username)


class UserPrivate(BaseModel):
    """What the user themself and admins see."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    email: str
    is_admin: bool
    is_active: bool
    date_joined: datetime
    last_login: datetime | None

    @computed_field(description=_GALLERY_URL_DESCRIPTION, examples=["/u/alice"])  # type: ignore[prop-decorator]
    @property
    def gallery_url(self) -> str:
        return gallery_path(self.username)


class UserAdminUpdate(RequestModel):
    """Fields an admin may change; omitted fields stay as they are."""

    username: Username | None = None
    email: EmailStr | None = Field(default=None, max_length=320)
    is_active: bool | None = None
    is_admin: bool | None = None
