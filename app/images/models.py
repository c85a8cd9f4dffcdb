"""The images table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigIntId, UTCDateTime, utcnow
from app.images.visibility import Visibility


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        # A user cannot keep the same URL twice; the constraint decides, not a prior check.
        UniqueConstraint("user_id", "image_url"),
        # A gallery is listed newest first by id: (user_id, id) serves it as a range scan.
        Index("ix_images_user_id_id", "user_id", "id"),
        CheckConstraint("visibility IN ('public', 'private')", name="visibility"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    image_url: Mapped[str] = mapped_column(String(2048))
    title: Mapped[str | None] = mapped_column(String(200), default=None)
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # What the last URL check read from the image's bytes; unknown when it could not tell.
    width: Mapped[int | None] = mapped_column(Integer, default=None)
    height: Mapped[int | None] = mapped_column(Integer, default=None)
    # Visibility values; stored as plain text so a new value needs no enum type migration.
    visibility: Mapped[str] = mapped_column(
        String(16), default=Visibility.PUBLIC.value, server_default=Visibility.PUBLIC.value
    )
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
