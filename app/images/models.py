"""The images table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigIntId, UTCDateTime, utcnow
from app.images.visibility import Visibility

# What the last checks say about an image's URL (app/images/link_health.py).
IMAGE_STATUSES = ("ok", "failing", "broken")


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        # A user cannot keep the same URL twice; the constraint decides, not a prior check.
        UniqueConstraint("user_id", "image_url"),
        # A gallery is listed newest first by id: (user_id, id) serves it as a range scan.
        Index("ix_images_user_id_id", "user_id", "id"),
        # The schedule: workers claim the images whose due time has passed, oldest first.
        Index("ix_images_due_at", "due_at"),
        # The admin listing by status, and the counts per status of the health summary.
        Index("ix_images_status_id", "status", "id"),
        CheckConstraint("status IN ('ok', 'failing', 'broken')", name="status"),
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

    # Link health: the outcome of the checks so far.
    status: Mapped[str] = mapped_column(String(16), default="ok", server_default="ok")
    failure_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(64), default=None)
    content_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # What the image host said about the bytes, for the next check's conditional request,
    # and a hash of the bytes read that tells new content from old.
    etag: Mapped[str | None] = mapped_column(String(256), default=None)
    last_modified: Mapped[str | None] = mapped_column(String(64), default=None)
    fingerprint: Mapped[str | None] = mapped_column(String(64), default=None)
    # The schedule: when the next check is due. A worker's claim moves it to the end of the
    # worker's lease, so an image whose worker died comes due again by itself.
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The claim a worker holds on the image (a random token), None when none does. A check
    # stores its outcome only while its claim is still the image's.
    recheck_claim: Mapped[str | None] = mapped_column(String(32), default=None)


class Thumbnail(Base):
    """One size of an image's thumbnail (WebP), or why it cannot be made.

    Stored in the database so every replica serves what one of them made. A row is made once
    per image content and size (the primary key decides between simultaneous makers), goes
    with its image (ON DELETE CASCADE), and is deleted when the image's bytes may have changed
    (`app.images.thumbnails.invalidate_thumbnails`). A file no decoder accepts keeps a row
    with its `error_code` and no bytes, so it is not fetched and decoded again on every view.
    """

    __tablename__ = "thumbnails"

    image_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    size: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The ETag: a hash of `content`, or of the error for a row without bytes.
    etag: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    error_code: Mapped[str | None] = mapped_column(String(40), default=None)
    width: Mapped[int | None] = mapped_column(Integer, default=None)
    height: Mapped[int | None] = mapped_column(Integer, default=None)
    made_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
