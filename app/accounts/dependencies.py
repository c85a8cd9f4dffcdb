"""Who is calling: the bearer-token dependencies every protected route uses."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from app.accounts.security import PasswordHasher, TokenService
from app.db import SessionDep
from app.errors import AdminRequired, InvalidToken, NotAuthenticated
from app.users.models import User

# auto_error=False: a missing token is answered by our own JSON error, with its code.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/accounts/login", auto_error=False)


async def get_token_service(request: Request) -> TokenService:
    service: TokenService = request.app.state.token_service
    return service


async def get_password_hasher(request: Request) -> PasswordHasher:
    hasher: PasswordHasher = request.app.state.password_hasher
    return hasher


TokenServiceDep = Annotated[TokenService, Depends(get_token_service)]
PasswordHasherDep = Annotated[PasswordHasher, Depends(get_password_hasher)]


async def _optional_user(
    session: SessionDep,
    tokens: TokenServiceDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> User | None:
    if token is None:
        return None
    user_id = tokens.read_access_token(token)
    user = await session.get(User, user_id)
    # A deleted or deactivated user's token stops working at once, not at expiry.
    if user is None or not user.is_active:
        raise InvalidToken()
    return user


async def _current_user(user: Annotated[User | None, Depends(_optional_user)]) -> User:
    if user is None:
        raise NotAuthenticated()
    return user


async def _admin_user(user: Annotated[User, Depends(_current_user)]) -> User:
    if not user.is_admin:
        raise AdminRequired()
    return user


OptionalUser = Annotated[User | None, Depends(_optional_user)]
CurrentUser = Annotated[User, Depends(_current_user)]
AdminUser = Annotated[User, Depends(_admin_user)]
