"""The users table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, String, true
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigIntId, UTCDateTime, utcnow
from app.users.identity_keys import USERNAME_KEY_MAX_LENGTH


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
