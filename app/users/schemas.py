"""What callers send and see about users."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from app.schemas import RequestModel
from app.text import Username


class UserPublic(BaseModel):
    """What anyone may see about a user: no email."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    date_joined: datetime


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


class UserAdminUpdate(RequestModel):
    """Fields an admin may change; omitted fields stay as they are."""

    username: Username | None = None
    email: EmailStr | None = Field(default=None, max_length=320)
    is_active: bool | None = None
    is_admin: bool | None = None
