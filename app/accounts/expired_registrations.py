"""Registrations never confirmed in time stop holding their username and email."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import delete, or_
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.users.identity_keys import email_key, username_key
from app.users.models import User

logger = logging.getLogger(__name__)


async def remove_expired_registrations(
    session: AsyncSession, *, username: str, email: str, max_age: timedelta
) -> None:
    """Delete the accounts that were never verified within `max_age` and hold
    this username or email (either way round, as `ensure_identity_free` compares them), so
    that nobody can squat a name or somebody else's address by registering it unconfirmed.
    Their confirmation links went with their lifetime; their tokens go with the row."""
    keys = {username_key(username), email_key(email)}
    cutoff = utcnow() - max_age
    removed: CursorResult[tuple[()]] = await session.execute(  # type: ignore[assignment]
        delete(User).where(
            User.is_verified.is_(False),
            User.date_joined < cutoff,
            or_(User.username_key.in_(keys), User.email_key.in_(keys)),
        )
    )
    if removed.rowcount:
        logger.info("removed %d registration(s) never verified in time", removed.rowcount)
