"""Mailed link tokens (verify the registration, reset the password, confirm a new email):
issued single-use with a lifetime, stored only as a hash, consumed once."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal
from urllib.parse import quote

from sqlalchemy import delete, select
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.errors import InvalidLinkToken
from app.accounts.models import AccountToken
from app.accounts.security import hash_opaque_token, new_opaque_token
from app.config import Settings
from app.db import utcnow
from app.users.models import User

TokenPurpose = Literal["reset_password", "verify_registration", "verify_email"]


async def issue_link_token(
    session: AsyncSession,
    user: User,
    purpose: TokenPurpose,
    lifetime: timedelta,
    *,
    new_email: str | None = None,
) -> str:
    """A new single-use token for `purpose`; only its hash is stored."""
    token = new_opaque_token()
    session.add(
        AccountToken(
            token_hash=hash_opaque_token(token),
            user_id=user.id,
            purpose=purpose,
            new_email=new_email,
            expires_at=utcnow() + lifetime,
        )
    )
    await session.flush()
    return token


async def find_link_token(
    session: AsyncSession, token: str, purpose: TokenPurpose
) -> tuple[AccountToken, User]:
    """The live token's row and its user, or `InvalidLinkToken`."""
    row = (
        await session.execute(
            select(AccountToken, User)
            .join(User, User.id == AccountToken.user_id)
            .where(
                AccountToken.token_hash == hash_opaque_token(token),
                AccountToken.purpose == purpose,
            )
        )
    ).first()
    if row is None or row[0].expires_at <= utcnow():
        raise InvalidLinkToken()
    return row[0], row[1]


async def find_link_token_user(session: AsyncSession, token: str, purpose: TokenPurpose) -> User:
    """The live token's user, or `InvalidLinkToken`; the token stays usable."""
    return (await find_link_token(session, token, purpose))[1]


async def consume_link_token(
    session: AsyncSession, token: str, purpose: TokenPurpose
) -> tuple[AccountToken, User]:
    """The token's row and its user; the row is deleted, so the token works once."""
    stored, user = await find_link_token(session, token, purpose)
    token_hash = stored.token_hash
    # Deleting by hash and counting the rows makes two concurrent uses yield one success.
    deleted: CursorResult[tuple[()]] = await session.execute(  # type: ignore[assignment]
        delete(AccountToken).where(AccountToken.token_hash == token_hash)
    )
    if deleted.rowcount != 1:
        raise InvalidLinkToken()
    return stored, user


def link_url(settings: Settings, page: str, token: str, *, login: str | None = None) -> str:
    """The page a mailed link opens (app/accounts/pages.py, or a front end's page at the same
    path), carrying the token. The login rides in the fragment, which browsers never send to
    a server: the page fills it in so that it can sign the user in."""
    url = f"{settings.frontend_url}/{page}?token={token}"
    if login is not None:
        url += f"#login={quote(login, safe='')}"
    return url
