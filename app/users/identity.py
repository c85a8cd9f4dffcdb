"""Identity rules: a username or email belongs to one user only, whichever way it is typed."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.users.errors import EmailTaken, UsernameTaken
from app.users.identity_keys import email_key, username_key
from app.users.models import User


async def ensure_identity_free(
    session: AsyncSession, *, username: str | None, email: str | None, except_user_id: int | None
) -> None:
    """Raise `UsernameTaken` or `EmailTaken` when another user already has them.

    Usernames may contain `@`, so a username is also checked against other users' emails and
    an email against other users' usernames: otherwise someone could take another person's
    email as a username and sign in, or receive reset mail, in their place.
    """
    wanted_username = username_key(username) if username is not None else None
    wanted_email = email_key(email) if email is not None else None
    keys = {key for key in (wanted_username, wanted_email) if key is not None}
    if not keys:
        return
    query = select(User.username_key, User.email_key).where(
        or_(User.username_key.in_(keys), User.email_key.in_(keys))
    )
    if except_user_id is not None:
        query = query.where(User.id != except_user_id)
    rows = (await session.execute(query)).all()
    if wanted_username is not None and any(
        wanted_username in (row.username_key, row.email_key) for row in rows
    ):
        raise UsernameTaken()
    if rows:
        raise EmailTaken()


async def flush_identity(session: AsyncSession) -> None:
    """Flush, turning a lost race on the unique username or email into a 409."""
    try:
        await session.flush()
    except IntegrityError as exc:
        message = str(exc.orig)
        if "username_key" in message:
            raise UsernameTaken() from exc
        if "email_key" in message:
            raise EmailTaken() from exc
        raise
