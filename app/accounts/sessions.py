"""Sign-in sessions: starting them, rotating their refresh tokens, and ending them."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.errors import InvalidToken
from app.accounts.models import AccountSession, RefreshToken
from app.accounts.security import TokenService, hash_opaque_token, new_opaque_token
from app.db import utcnow
from app.users.models import User


class InvalidRefreshToken(InvalidToken):
    detail = "The refresh token is invalid, expired or already used; sign in again."


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str


def _new_refresh_token(
    session: AsyncSession, tokens: TokenService, account_session: AccountSession
) -> str:
    refresh_token = new_opaque_token()
    expires_at = utcnow() + tokens.refresh_lifetime
    account_session.expires_at = expires_at
    session.add(
        RefreshToken(
            token_hash=hash_opaque_token(refresh_token),
            session_id=account_session.id,
            expires_at=expires_at,
        )
    )
    # Not flushed here: nothing reads the row back, and the request's commit writes it (a
    # failure there is still an error answer). The profile showed each flush's cost per login.
    return refresh_token


async def start_session(session: AsyncSession, tokens: TokenService, user: User) -> TokenPair:
    """A new session for a user who just proved who they are, with its first token pair."""
    now = utcnow()
    # Housekeeping: sessions whose refresh tokens all ran out can never be used again.
    await session.execute(
        delete(AccountSession).where(
            AccountSession.user_id == user.id, AccountSession.expires_at <= now
        )
    )
    account_session = AccountSession(user_id=user.id, expires_at=now + tokens.refresh_lifetime)
    session.add(account_session)
    await session.flush()
    refresh_token = _new_refresh_token(session, tokens, account_session)
    access = tokens.issue_access_token(user.id, account_session.id)
    return TokenPair(access.token, access.expires_in, refresh_token)


async def refresh_session(
    session: AsyncSession, tokens: TokenService, refresh_token: str
) -> TokenPair:
    """Trade a refresh token for a new pair. A token presented a second time means someone
    holds a copy: the whole session is ended, for the thief and the owner alike."""
    now = utcnow()
    token_hash = hash_opaque_token(refresh_token)
    row = (
        await session.execute(
            select(RefreshToken, AccountSession, User.is_active)
            .join(AccountSession, AccountSession.id == RefreshToken.session_id)
            .join(User, User.id == AccountSession.user_id)
            .where(RefreshToken.token_hash == token_hash)
        )
    ).first()
    if row is None:
        raise InvalidRefreshToken()
    stored, account_session, user_is_active = row
    if not user_is_active or stored.expires_at <= now:
        raise InvalidRefreshToken()
    # Marking the token used only if it is still unused makes two concurrent refreshes with
    # one token count as a reuse instead of both succeeding.
    marked: CursorResult[tuple[()]] = await session.execute(  # type: ignore[assignment]
        update(RefreshToken)
        .where(RefreshToken.token_hash == token_hash, RefreshToken.used_at.is_(None))
        .values(used_at=now)
    )
    if marked.rowcount != 1:
        await session.execute(delete(AccountSession).where(AccountSession.id == stored.session_id))
        # The revocation must outlive the error answer, which rolls the request back.
        await session.commit()
        raise InvalidRefreshToken()
    # Used tokens are kept to recognise a reuse only while they could still be presented.
    await session.execute(
        delete(RefreshToken).where(
            RefreshToken.session_id == account_session.id,
            RefreshToken.used_at.is_not(None),
            RefreshToken.expires_at <= now,
        )
    )
    new_refresh_token = _new_refresh_token(session, tokens, account_session)
    access = tokens.issue_access_token(account_session.user_id, account_session.id)
    return TokenPair(access.token, access.expires_in, new_refresh_token)


async def end_session(session: AsyncSession, session_id: int) -> None:
    """End one session: its access and refresh tokens stop working now."""
    await session.execute(delete(AccountSession).where(AccountSession.id == session_id))


async def end_user_sessions(
    session: AsyncSession, user_id: int, *, except_session_id: int | None = None
) -> None:
    """End every session of a user, or every one but the caller's own."""
    query = delete(AccountSession).where(AccountSession.user_id == user_id)
    if except_session_id is not None:
        query = query.where(AccountSession.id != except_session_id)
    await session.execute(query)
