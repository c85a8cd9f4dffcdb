"""The account lifecycle: register, verify, sign in, change and reset the password,
change the profile, delete the account; and bootstrapping the admin account."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts import link_tokens
from app.accounts.credential_tokens import revoke_credential_tokens
from app.accounts.errors import (
    AccountNotVerified,
    InactiveAccount,
    InvalidCredentials,
    InvalidLinkToken,
    WrongPassword,
)
from app.accounts.expired_registrations import remove_expired_registrations
from app.accounts.mails import AccountMails, AccountOutbox
from app.accounts.password_policy import ensure_strong_password
from app.accounts.security import (
    PasswordHasher,
    TokenService,
)
from app.accounts.sessions import (
    UNKNOWN_CLIENT,
    SessionClient,
    TokenPair,
    end_user_sessions,
    start_session,
)
from app.config import Settings
from app.db import end_read_transaction, utcnow
from app.mail import Mailer
from app.rate_limits import RateLimited, RateLimiter
from app.users.identity import ensure_identity_free, flush_identity
from app.users.identity_keys import email_key, username_key
from app.users.models import User

logger = logging.getLogger(__name__)


async def create_user(
    session: AsyncSession,
    hasher: PasswordHasher,
    *,
    username: str,
    email: str,
    password: str,
    is_admin: bool = False,
    is_verified: bool = True,
    unverified_expire_after: timedelta | None = None,
) -> User:
    """Create an account after checking the password policy and that the identity is free.

    With `unverified_expire_after`, accounts holding the username or email that were never
    verified within that time are removed first: they no longer block it."""
    await ensure_strong_password(password, username=username, email=email)
    # Hashed before the first query, so no connection is held while hashing (and callers
    # with a transaction of their own, like the admin bootstrap, keep it).
    password_hash = await hasher.hash(password)
    if unverified_expire_after is not None:
        await remove_expired_registrations(
            session, username=username, email=email, max_age=unverified_expire_after
        )
    await ensure_identity_free(session, username=username, email=email, except_user_id=None)
    user = User(
        username=username,
        username_key=username_key(username),
        email=email,
        email_key=email_key(email),
        password_hash=password_hash,
        is_admin=is_admin,
        is_verified=is_verified,
    )
    session.add(user)
    await flush_identity(session)
    return user


async def _hash_without_connection(
    session: AsyncSession, hasher: PasswordHasher, password: str
) -> str:
    """Hash a new password. Nothing has been written yet, so the read transaction ends first:
    a burst of hashing must not hold every pooled connection while other requests wait."""
    await end_read_transaction(session)
    return await hasher.hash(password)


async def _verify_without_connection(
    session: AsyncSession, hasher: PasswordHasher, user: User, password: str
) -> bool:
    """Check a password (re-hashing an outdated hash), with no connection held meanwhile."""
    await end_read_transaction(session)
    valid, new_hash = await hasher.verify(password, user.password_hash)
    if valid and new_hash is not None:
        user.password_hash = new_hash
    return valid


async def register(
    session: AsyncSession,
    hasher: PasswordHasher,
    limiter: RateLimiter,
    outbox: AccountOutbox,
    settings: Settings,
    *,
    address: str,
    username: str,
    email: str,
    password: str,
) -> User:
    """Create an account; with verification on, mail the token that lets it sign in."""
    await limiter.hit("register_address", address)
    verify = settings.register_verification_enabled
    user = await create_user(
        session,
        hasher,
        username=username,
        email=email,
        password=password,
        is_verified=not verify,
        unverified_expire_after=timedelta(hours=settings.verification_expire_hours),
    )
    if verify:
        token = await link_tokens.issue_link_token(
            session,
            user,
            "verify_registration",
            timedelta(hours=settings.verification_expire_hours),
        )
        outbox.send(outbox.mails.verify_registration(user, token))
    return user


async def count_verification_resend(limiter: RateLimiter, *, address: str) -> None:
    """The request half of POST /accounts/resend-verification: the per-address limit.

    Nothing here depends on whether an account matches, so every answer takes the same time;
    `mail_verification_link` does the rest after the response."""
    await limiter.hit("resend_verification_address", address)


async def mail_verification_link(
    sessionmaker: async_sessionmaker[AsyncSession],
    limiter: RateLimiter,
    mailer: Mailer,
    mails: AccountMails,
    *,
    login: str,
) -> None:
    """Mail a new confirmation link when `login` names an active, unconfirmed account whose
    confirmation mails are within RATE_LIMIT_RESEND_VERIFICATION_PER_ACCOUNT. Runs after the
    response, in its own transaction; failures are logged (the caller had its 202)."""
    try:
        async with sessionmaker() as session:
            user = await find_user_by_login(session, login)
            if user is None or user.is_verified or not user.is_active:
                return
            await end_read_transaction(session)
            try:
                await limiter.hit("resend_verification_account", f"user:{user.id}")
            except RateLimited:
                return
            lifetime = timedelta(hours=mails.settings.verification_expire_hours)
            token = await link_tokens.issue_link_token(
                session, user, "verify_registration", lifetime
            )
            mail = mails.verify_registration(user, token)
            await session.commit()
    except Exception:
        logger.exception("confirmation link not sent")
        return
    await mailer.send(mail)


async def verify_registration(session: AsyncSession, *, token: str) -> None:
    """Mark the account verified: it may sign in from now on."""
    _, user = await link_tokens.consume_link_token(session, token, "verify_registration")
    user.is_verified = True
    await session.flush()


async def find_user_by_login(session: AsyncSession, login: str) -> User | None:
    """The user whose username or email is `login`."""
    if "@" in login:
        # An email match wins over a username that looks like an email (older rows).
        query = (
            select(User)
            .where(
                or_(User.email_key == email_key(login), User.username_key == username_key(login))
            )
            .order_by((User.email_key == email_key(login)).desc())
        )
    else:
        query = select(User).where(User.username_key == username_key(login))
    return (await session.execute(query.limit(1))).scalar_one_or_none()


async def login(
    session: AsyncSession,
    hasher: PasswordHasher,
    tokens: TokenService,
    limiter: RateLimiter,
    *,
    address: str,
    login: str,
    password: str,
    client: SessionClient = UNKNOWN_CLIENT,
) -> TokenPair:
    """Check the credentials and start a session; unknown users cost as much as known.

    Limits are counted before any password work, so a flood costs us almost nothing."""
    await limiter.hit("login_address", address)
    user = await find_user_by_login(session, login)
    # Nothing is written until the password is known to be right: no connection is held
    # while the limit store is asked and the password is verified.
    await end_read_transaction(session)
    account_key = f"user:{user.id}" if user is not None else f"login:{username_key(login)}"
    await limiter.hit("login_account", account_key)
    if user is None:
        await hasher.verify_dummy(password)
        raise InvalidCredentials()
    if not await _verify_without_connection(session, hasher, user, password):
        raise InvalidCredentials()
    if not user.is_active:
        raise InactiveAccount()
    if not user.is_verified:
        raise AccountNotVerified()
    # Written by the flush that inserts the session: one flush fewer per login.
    user.last_login = utcnow()
    return await start_session(session, tokens, user, client)


async def _check_password(
    session: AsyncSession, hasher: PasswordHasher, limiter: RateLimiter, user: User, password: str
) -> None:
    """`WrongPassword` unless `password` is the user's. Every check counts against the
    account's sign-in limit, before any hashing: a stolen access token must not become an
    unlimited password oracle (or a way to keep every hashing thread busy)."""
    await limiter.hit("login_account", f"user:{user.id}")
    if not await _verify_without_connection(session, hasher, user, password):
        raise WrongPassword()


async def change_password(
    session: AsyncSession,
    hasher: PasswordHasher,
    limiter: RateLimiter,
    outbox: AccountOutbox,
    user: User,
    *,
    current_session_id: int,
    old_password: str,
    password: str,
) -> None:
    """Set a new password; every other session of the user ends, the caller's stays,
    pending reset and email-change links die, and a notice is mailed."""
    await _check_password(session, hasher, limiter, user, old_password)
    await ensure_strong_password(password, username=user.username, email=user.email)
    user.password_hash = await _hash_without_connection(session, hasher, password)
    await end_user_sessions(session, user.id, except_session_id=current_session_id)
    await revoke_credential_tokens(session, user.id)
    await session.flush()
    outbox.send(outbox.mails.password_changed(user, utcnow()))


async def count_reset_link_request(limiter: RateLimiter, *, address: str) -> None:
    """The request half of POST /accounts/send-reset-password-link: the per-address limit.

    Nothing here depends on whether an account matches, so an existing account's answer
    takes as long as a missing one's; `mail_reset_link` does the rest after the response."""
    await limiter.hit("reset_address", address)


async def mail_reset_link(
    sessionmaker: async_sessionmaker[AsyncSession],
    limiter: RateLimiter,
    mailer: Mailer,
    mails: AccountMails,
    *,
    login: str,
) -> None:
    """Mail a single-use reset link when `login` names an active account and its reset mails
    are within RATE_LIMIT_RESET_PER_ACCOUNT. Runs after the response, in its own
    transaction; failures are logged (the caller was answered 202 either way)."""
    try:
        async with sessionmaker() as session:
            user = await find_user_by_login(session, login)
            await end_read_transaction(session)
            account_key = f"user:{user.id}" if user is not None else f"login:{username_key(login)}"
            try:
                await limiter.hit("reset_account", account_key)
            except RateLimited:
                return
            if user is None or not user.is_active:
                return
            token = await link_tokens.issue_link_token(
                session,
                user,
                "reset_password",
                timedelta(minutes=mails.settings.reset_password_expire_minutes),
            )
            mail = mails.reset_password(user, token)
            await session.commit()
    except Exception:
        logger.exception("reset link not sent")
        return
    await mailer.send(mail)


async def reset_password(
    session: AsyncSession,
    hasher: PasswordHasher,
    outbox: AccountOutbox,
    *,
    token: str,
    password: str,
) -> None:
    """Set a new password with a mailed token; the token, the user's other reset links and
    pending email changes die, every session ends, and a notice is mailed."""
    user = await link_tokens.find_link_token_user(session, token, "reset_password")
    if not user.is_active:
        raise InvalidLinkToken()
    await ensure_strong_password(password, username=user.username, email=user.email)
    new_hash = await _hash_without_connection(session, hasher, password)
    await link_tokens.consume_link_token(session, token, "reset_password")
    user.password_hash = new_hash
    # Whoever holds the mailbox just proved it.
    user.is_verified = True
    await revoke_credential_tokens(session, user.id)
    await end_user_sessions(session, user.id)
    await session.flush()
    outbox.send(outbox.mails.password_reset(user, utcnow()))


async def update_profile(
    session: AsyncSession,
    hasher: PasswordHasher,
    limiter: RateLimiter,
    outbox: AccountOutbox,
    settings: Settings,
    user: User,
    *,
    username: str | None,
    email: str | None,
    password: str | None,
) -> User:
    """Change one's username at once; a new email at once, or (with verification on) only
    once the token mailed to the new address comes back. An email change needs the current
    password: whoever controls the address controls the password resets."""
    if email is not None:
        if password is None:  # pragma: no cover - the request schema requires it
            raise WrongPassword()
        await _check_password(session, hasher, limiter, user, password)
    if email == user.email:
        email = None
    await ensure_identity_free(session, username=username, email=email, except_user_id=user.id)
    if username is not None:
        user.username = username
        user.username_key = username_key(username)
    if email is not None:
        # A new mailbox must prove it is reachable; a change of letter case is the same one.
        if settings.register_verification_enabled and email_key(email) != user.email_key:
            token = await link_tokens.issue_link_token(
                session,
                user,
                "verify_email",
                timedelta(hours=settings.verification_expire_hours),
                new_email=email,
            )
            outbox.send(outbox.mails.verify_email(user, email, token))
        else:
            old_email = user.email
            user.email = email
            user.email_key = email_key(email)
            if email_key(email) != email_key(old_email):
                outbox.send(outbox.mails.email_changed(user, old_email, utcnow()))
    await flush_identity(session)
    return user


async def verify_email(session: AsyncSession, outbox: AccountOutbox, *, token: str) -> None:
    """Switch the account to the new address the token was mailed to."""
    stored, user = await link_tokens.consume_link_token(session, token, "verify_email")
    if stored.new_email is None:  # pragma: no cover - always set for this purpose
        raise InvalidLinkToken()
    await ensure_identity_free(
        session, username=None, email=stored.new_email, except_user_id=user.id
    )
    old_email = user.email
    user.email = stored.new_email
    user.email_key = email_key(stored.new_email)
    await flush_identity(session)
    outbox.send(outbox.mails.email_changed(user, old_email, utcnow()))


async def sign_out_everywhere(session: AsyncSession, user: User) -> None:
    """End every session of the user, and the reset and email-change links pending."""
    await end_user_sessions(session, user.id)
    await revoke_credential_tokens(session, user.id)


async def delete_account(
    session: AsyncSession,
    hasher: PasswordHasher,
    limiter: RateLimiter,
    user: User,
    *,
    password: str,
) -> None:
    """Delete the account after checking the password; its sessions, tokens and images
    go with it (foreign-key cascades)."""
    await _check_password(session, hasher, limiter, user, password)
    await session.delete(user)
    await session.flush()


class AdminBootstrapConflict(Exception):
    """ADMIN_USERNAME or ADMIN_EMAIL belongs to an account that is not the configured admin:
    start-up stops rather than hand admin rights to whoever registered the name first."""


async def bootstrap_admin(
    session: AsyncSession, hasher: PasswordHasher, *, username: str, email: str, password: str
) -> User:
    """Make sure the configured admin exists and is an admin; an existing password is kept.

    An existing account is made admin only when it matches both ADMIN_USERNAME (or a name
    that looks like it) and ADMIN_EMAIL; one that matches only one of them raises
    `AdminBootstrapConflict`, naming it."""
    by_name = (
        await session.execute(select(User).where(User.username_key == username_key(username)))
    ).scalar_one_or_none()
    by_email = (
        await session.execute(select(User).where(User.email_key == email_key(email)))
    ).scalar_one_or_none()
    if by_name is not None and by_name.email_key != email_key(email):
        raise AdminBootstrapConflict(
            f"ADMIN_USERNAME={username!r}: account {by_name.id} ({by_name.username!r}) has that"
            " name but another email than ADMIN_EMAIL; it is not made admin. Rename or delete"
            " that account, or choose another ADMIN_USERNAME."
        )
    if by_email is not None and by_email is not by_name:
        raise AdminBootstrapConflict(
            f"ADMIN_EMAIL: account {by_email.id} ({by_email.username!r}) has that email but"
            f" another username than ADMIN_USERNAME={username!r}; it is not made admin. Set"
            " ADMIN_USERNAME to that account's name, or choose another ADMIN_EMAIL."
        )
    user = by_name
    if user is None:
        user = await create_user(
            session, hasher, username=username, email=email, password=password, is_admin=True
        )
        logger.info("created admin account %r", username)
    elif not user.is_admin or not user.is_active or not user.is_verified:
        user.is_admin = True
        user.is_active = True
        user.is_verified = True
        logger.info("granted admin rights to existing account %r", username)
    return user
