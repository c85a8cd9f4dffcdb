"""Sign-in sessions: starting them, rotating their refresh tokens, and ending them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.errors import InvalidToken, SessionNotFound
from app.accounts.models import (
    IP_ADDRESS_LENGTH,
    USER_AGENT_LENGTH,
    AccountSession,
    RefreshToken,
)
from app.accounts.security import TokenService, hash_opaque_token, new_opaque_token
from app.db import utcnow
from app.users.models import User


class InvalidRefreshToken(InvalidToken):
    detail = "The refresh token is invalid, expired or already used; sign in again."


# How stale `last_used_at` may get before an access writes it again: at most one write per
# session every few minutes, however many requests it makes.
LAST_USED_PRECISION = timedelta(minutes=5)

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class SessionClient:
    """Where a session is used from, as the user will see it in their list of sessions."""

    user_agent: str | None
    ip_address: str | None

    @classmethod
    def from_request(cls, user_agent: str | None, ip_address: str | None) -> SessionClient:
        """Cut to the columns' lengths and without control characters (a hostile header
        must neither fail the insert nor forge lines where the value is shown)."""
        if user_agent is not None:
            user_agent = _CONTROL_CHARACTERS.sub(" ", user_agent).strip()[:USER_AGENT_LENGTH]
        if ip_address is not None:
            ip_address = ip_address[:IP_ADDRESS_LENGTH]
        return cls(user_agent or None, ip_address or None)


UNKNOWN_CLIENT = SessionClient(None, None)


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


async def start_session(
    session: AsyncSession,
    tokens: TokenService,
    user: User,
    client: SessionClient = UNKNOWN_CLIENT,
) -> TokenPair:
    """A new session for a user who just proved who they are, with its first token pair."""
    now = utcnow()
    # Housekeeping: sessions whose refresh tokens all ran out can never be used again.
    await session.execute(
        delete(AccountSession).where(
            AccountSession.user_id == user.id, AccountSession.expires_at <= now
        )
    )
    account_session = AccountSession(
        user_id=user.id,
        created_at=now,
        expires_at=now + tokens.refresh_lifetime,
        last_used_at=now,
        user_agent=client.user_agent,
        ip_address=client.ip_address,
    )
    session.add(account_session)
    await session.flush()
    refresh_token = _new_refresh_token(session, tokens, account_session)
    access = tokens.issue_access_token(user.id, account_session.id)
    return TokenPair(access.token, access.expires_in, refresh_token)


async def refresh_session(
    session: AsyncSession,
    tokens: TokenService,
    refresh_token: str,
    client: SessionClient = UNKNOWN_CLIENT,
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
    account_session.last_used_at = now
    if client != UNKNOWN_CLIENT:
        account_session.user_agent = client.user_agent
        account_session.ip_address = client.ip_address
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


async def touch_session(session: AsyncSession, session_id: int, last_used_at: datetime) -> None:
    """Record an access when the session's `last_used_at` is older than LAST_USED_PRECISION;
    otherwise do nothing (no statement at all). The guard in the WHERE clause makes requests
    racing on one stale session write it once."""
    now = utcnow()
    if now - last_used_at < LAST_USED_PRECISION:
        return
    await session.execute(
        update(AccountSession)
        .where(
            AccountSession.id == session_id,
            AccountSession.last_used_at < now - LAST_USED_PRECISION,
        )
        .values(last_used_at=now)
    )


async def list_sessions(session: AsyncSession, user_id: int) -> list[AccountSession]:
    """The user's live sessions, newest first."""
    query = (
        select(AccountSession)
        .where(AccountSession.user_id == user_id, AccountSession.expires_at > utcnow())
        .order_by(AccountSession.created_at.desc(), AccountSession.id.desc())
    )
    return list((await session.execute(query)).scalars())


async def end_own_session(session: AsyncSession, user_id: int, session_id: int) -> None:
    """End one of the user's sessions; another user's (or an unknown) id is `SessionNotFound`,
    the same answer either way so ids reveal nothing."""
    ended: CursorResult[tuple[()]] = await session.execute(  # type: ignore[assignment]
        delete(AccountSession).where(
            AccountSession.id == session_id, AccountSession.user_id == user_id
        )
    )
    if ended.rowcount != 1:
        raise SessionNotFound()
