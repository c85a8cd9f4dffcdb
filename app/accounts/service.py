"""Registering, signing in and bootstrapping the admin account."""

from __future__ import annotations

import logging

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.password_policy import ensure_strong_password
from app.accounts.security import AccessToken, PasswordHasher, TokenService
from app.db import utcnow
from app.errors import Conflict, InactiveAccount, InvalidCredentials
from app.text import email_key, username_key
from app.users.models import User

logger = logging.getLogger(__name__)


class UsernameTaken(Conflict):
    code = "username_taken"
    detail = "This username is already taken."


class EmailTaken(Conflict):
    code = "email_taken"
    detail = "An account with this email already exists."


async def ensure_identity_free(
    session: AsyncSession, *, username: str | None, email: str | None, except_user_id: int | None
) -> None:
    """Raise `UsernameTaken` or `EmailTaken` when another user already has them."""
    conditions = []
    if username is not None:
        conditions.append(User.username_key == username_key(username))
    if email is not None:
        conditions.append(User.email_key == email_key(email))
    if not conditions:
        return
    query = select(User.username_key, User.email_key).where(or_(*conditions))
    if except_user_id is not None:
        query = query.where(User.id != except_user_id)
    rows = (await session.execute(query)).all()
    if username is not None and any(row.username_key == username_key(username) for row in rows):
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


async def register(
    session: AsyncSession,
    hasher: PasswordHasher,
    *,
    username: str,
    email: str,
    password: str,
    is_admin: bool = False,
) -> User:
    """Create an account after checking the password policy and that the identity is free."""
    ensure_strong_password(password, username=username, email=email)
    await ensure_identity_free(session, username=username, email=email, except_user_id=None)
    user = User(
        username=username,
        username_key=username_key(username),
        email=email,
        email_key=email_key(email),
        password_hash=await hasher.hash(password),
        is_admin=is_admin,
    )
    session.add(user)
    await flush_identity(session)
    return user


async def find_user_by_login(session: AsyncSession, login: str) -> User | None:
    """The user whose username or email is `login`."""
    if "@" in login:
        query = select(User).where(
            or_(User.email_key == email_key(login), User.username_key == username_key(login))
        )
    else:
        query = select(User).where(User.username_key == username_key(login))
    return (await session.execute(query.limit(1))).scalar_one_or_none()


async def login(
    session: AsyncSession,
    hasher: PasswordHasher,
    tokens: TokenService,
    *,
    login: str,
    password: str,
) -> AccessToken:
    """Check the credentials and issue an access token; unknown users cost as much as known."""
    user = await find_user_by_login(session, login)
    if user is None:
        await hasher.verify_dummy(password)
        raise InvalidCredentials()
    valid, new_hash = await hasher.verify(password, user.password_hash)
    if not valid:
        raise InvalidCredentials()
    if not user.is_active:
        raise InactiveAccount()
    if new_hash is not None:
        user.password_hash = new_hash
    user.last_login = utcnow()
    await session.flush()
    return tokens.issue_access_token(user.id)


async def bootstrap_admin(
    session: AsyncSession, hasher: PasswordHasher, *, username: str, email: str, password: str
) -> User:
    """Make sure the configured admin exists and is an admin; an existing password is kept."""
    user = (
        await session.execute(select(User).where(User.username_key == username_key(username)))
    ).scalar_one_or_none()
    if user is None:
        user = await register(
            session, hasher, username=username, email=email, password=password, is_admin=True
        )
        logger.info("created admin account %r", username)
    elif not user.is_admin or not user.is_active:
        user.is_admin = True
        user.is_active = True
        logger.info("granted admin rights to existing account %r", username)
    return user
