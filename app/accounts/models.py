"""Sign-in sessions, their refresh tokens, and the single-use tokens sent by email."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigIntId, UTCDateTime, utcnow

# Hex SHA-256 of a token: the tokens are 256-bit random strings, so a fast unsalted hash
# is enough to make a stolen table useless (nothing to brute-force).
TOKEN_HASH_LENGTH = 64
USER_AGENT_LENGTH = 256
# The longest text form of an IPv6 address (an IPv4-mapped one).
IP_ADDRESS_LENGTH = 45


class AccountSession(Base):
    """One sign-in: access tokens name it (`sid`), so deleting the row ends them at once."""

    __tablename__ = "account_sessions"
    __table_args__ = (Index("ix_account_sessions_user_id", "user_id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When the newest refresh token runs out; the session is dead after that.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Refreshed on every token refresh, and on access at most every few minutes
    # (app/accounts/dependencies.py): never a write per request.
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # As last seen (sign-in or refresh), cut to these lengths: shown to the user in their
    # list of sessions so they can tell a stranger's session from their own.
    user_agent: Mapped[str | None] = mapped_column(String(USER_AGENT_LENGTH), default=None)
    ip_address: Mapped[str | None] = mapped_column(String(IP_ADDRESS_LENGTH), default=None)


class RefreshToken(Base):
    """A refresh token of a session, by hash. Used ones are kept so that a second use
    (a stolen copy) is recognised and ends the whole session."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (Index("ix_refresh_tokens_session_id", "session_id"),)

    token_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LENGTH), primary_key=True)
    session_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("account_sessions.id", ondelete="CASCADE")
    )
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class AccountToken(Base):
    """A single-use token mailed to the user (password reset, email verification), by hash."""

    __tablename__ = "account_tokens"
    __table_args__ = (Index("ix_account_tokens_user_id", "user_id"),)

    token_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LENGTH), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(32))
    # For an email change: the address being verified.
    new_email: Mapped[str | None] = mapped_column(String(320), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
