"""Reading users, and what admins may change about them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import MAX_ID
from app.pagination import Listing, PageParams, keyset, paginate
from app.users.errors import UserNotFound
from app.users.identity import ensure_identity_free, flush_identity
from app.users.identity_keys import email_key, username_key
from app.users.models import User
from app.users.schemas import UserAdminUpdate

USERS_LISTING = "users"


async def get_user(session: AsyncSession, user_id: int) -> User:
    """The user with this id, or `UserNotFound`."""
    user = await session.get(User, user_id) if 0 < user_id <= MAX_ID else None
    if user is None:
        raise UserNotFound()
    return user


async def ensure_user_exists(session: AsyncSession, user_id: int) -> None:
    """Raise `UserNotFound` unless the user exists (one indexed lookup, no row loaded)."""
    if not 0 < user_id <= MAX_ID:
        raise UserNotFound()
    found = (await session.execute(select(User.id).where(User.id == user_id))).first()
    if found is None:
        raise UserNotFound()


# Listings read the public profile's columns (`UserPublic`) with Core, not ORM objects.
_users = User.__table__.c


_USERS = keyset(
    select(_users.id, _users.username, _users.date_joined),
    id_column=_users.id,
    newest_first=False,
)


async def list_users(session: AsyncSession, page: PageParams) -> Listing[dict[str, Any]]:
    """Users in id order, one page at a time: what anyone may see of them."""
    return await paginate(session, _USERS, {}, listing=USERS_LISTING, page=page)


_users_table = cast(Table, User.__table__)

# One indexed read by primary key: all a gallery page's revalidation costs.
GALLERY_VERSION = select(_users.gallery_version).where(_users.id == bindparam("owner_id"))


async def gallery_version(session: AsyncSession, user_id: int) -> int:
    """The version of the user's gallery; `UserNotFound` when there is no such user."""
    if not 0 < user_id <= MAX_ID:
        raise UserNotFound()
    version = (await session.execute(GALLERY_VERSION, {"owner_id": user_id})).scalar()
    if version is None:
        raise UserNotFound()
    return int(version)


async def galleries_changed(session: AsyncSession, user_ids: Iterable[int]) -> None:
    """Move these users' gallery versions on, in the caller's transaction. Every write to
    what a gallery shows calls this BEFORE its image writes, so all of them lock rows in one
    order, the users' (by id) then the images', which is also the order of an account
    deletion (the user's row, then its images by the cascade): concurrent writers to one
    gallery queue on its user's row instead of deadlocking. The galleries' tags change when
    the transaction commits, which is before the write's response is sent (`app.db`)."""
    ids = sorted(set(user_ids))
    if not ids:
        return
    column = _users_table.c.gallery_version
    await session.execute(
        update(_users_table)
        .where(_users_table.c.id.in_(ids))
        .values(gallery_version=column + 1)
        .execution_options(synchronize_session=False)
    )


async def update_user(session: AsyncSession, user_id: int, changes: UserAdminUpdate) -> User:
    """Apply an admin's changes to a user."""
    user = await get_user(session, user_id)
    fields = changes.model_dump(exclude_unset=True)
    await ensure_identity_free(
        session,
        username=fields.get("username"),
        email=fields.get("email"),
        except_user_id=user.id,
    )
    if fields.get("username") is not None:
        user.username = fields["username"]
        user.username_key = username_key(user.username)
    if fields.get("email") is not None:
        user.email = fields["email"]
        user.email_key = email_key(user.email)
    if fields.get("is_active") is not None:
        user.is_active = fields["is_active"]
    if fields.get("is_admin") is not None:
        user.is_admin = fields["is_admin"]
    await flush_identity(session)
    return user
