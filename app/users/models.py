"""The users table."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, String, true
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigIntId, UTCDateTime, utcnow
from app.users.identity_keys import USERNAME_KEY_MAX_LENGTH


def new_gallery_version() -> int:
    """A new user's first gallery version: random, so a user id that SQLite hands out again
    after a deletion never meets the tags its previous owner's gallery was served with (and
    still far from the column's limit after any number of changes)."""
    return secrets.randbits(52) + 1


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    username: Mapped[str] = mapped_column(String(150))
    # Canonical forms (app/users/identity.py: the TR39 skeleton of the NFKC case-folded
    # name, the case-folded email) carry the uniqueness, so names that differ only by case,
    # Unicode normalisation or look-alike letters collide instead of coexisting.
    username_key: Mapped[str] = mapped_column(String(USERNAME_KEY_MAX_LENGTH), unique=True)
    email: Mapped[str] = mapped_column(String(320))
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # False only while REGISTER_VERIFICATION_ENABLED waits for the emailed token.
    is_verified: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    date_joined: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Changes in the same transaction as anything the user's gallery shows (created, changed,
    # rechecked or deleted images): a gallery page's ETag is derived from it, so revalidating
    # a page costs this one indexed read (app/http_caching.py, app/images/service.py).
    gallery_version: Mapped[int] = mapped_column(
        BigInteger, default=new_gallery_version, server_default="1"
    )
