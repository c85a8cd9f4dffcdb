"""User endpoints: the public directory, one's own profile, and admin changes."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.accounts.dependencies import AdminUser, CurrentUserRead, OptionalUserRead
from app.accounts.errors import AdminRequired, InvalidToken, NotAuthenticated
from app.db import SessionDep
from app.errors import InvalidInput, error_responses
from app.http_caching import NOT_MODIFIED_RESPONSE
from app.pagination import DEFAULT_LIMIT, CursorQuery, InvalidCursor, LimitQuery, Page
from app.reads import AnonymousRead
from app.users import service
from app.users.dependencies import UserIdPath
from app.users.errors import EmailTaken, UsernameTaken, UserNotFound
from app.users.models import User
from app.users.schemas import UserAdminUpdate, UserPrivate, UserPublic

router = APIRouter(prefix="/users", tags=["users"])


@router.get(
    "/me",
    response_model=UserPrivate,
    summary="The signed-in user",
    responses=NOT_MODIFIED_RESPONSE | error_responses(NotAuthenticated),
)
async def read_me(read: CurrentUserRead) -> Response:
    """The signed-in user, email included."""
    return read.revalidation.content(read.viewer, UserPrivate, private=True)


@router.get(
    "",
    response_model=Page[UserPublic],
    summary="List users",
    responses=NOT_MODIFIED_RESPONSE | error_responses(InvalidCursor),
)
async def list_users(
    read: AnonymousRead, limit: LimitQuery = DEFAULT_LIMIT, cursor: CursorQuery = None
) -> Response:
    """Public profiles of all users in id order, without emails."""
    users = await service.list_users(read.session, read.page(limit, cursor))
    return read.revalidation.content(users, Page[UserPublic], private=False, vary=False)


@router.get(
    "/{user_id}",
    response_model=UserPrivate | UserPublic,
    summary="Get a user",
    # Signing in is optional here (it only reveals the email to its owner and admins).
    openapi_extra={"security": [{}]},
    responses=NOT_MODIFIED_RESPONSE | error_responses(UserNotFound, InvalidToken, InvalidInput),
)
async def read_user(user_id: UserIdPath, read: OptionalUserRead) -> Response:
    """A user's public profile; the email is shown only to the user themself and to admins."""
    user = await service.get_user(read.session, user_id)
    viewer = read.viewer
    shows_email = viewer is not None and (viewer.id == user.id or viewer.is_admin)
    profile = UserPrivate if shows_email else UserPublic
    return read.revalidation.content(user, profile, private=viewer is not None)


@router.patch(
    "/{user_id}",
    response_model=UserPrivate,
    summary="Change a user (admin)",
    responses=error_responses(
        NotAuthenticated,
        AdminRequired,
        UserNotFound,
        UsernameTaken,
        EmailTaken,
        InvalidInput,
    ),
)
async def update_user(
    user_id: UserIdPath, changes: UserAdminUpdate, session: SessionDep, _: AdminUser
) -> User:
    """Change a user's username, email, active flag or admin flag."""
    return await service.update_user(session, user_id, changes)
