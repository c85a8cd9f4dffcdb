"""Account endpoints: register, sign in, and the caller's own profile."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.accounts import service
from app.accounts.dependencies import CurrentUser, PasswordHasherDep, TokenServiceDep
from app.accounts.password_policy import WeakPassword
from app.accounts.schemas import LoginForm, LoginRequest, RegisterRequest, TokenResponse
from app.db import SessionDep
from app.errors import (
    InactiveAccount,
    InvalidCredentials,
    InvalidInput,
    NotAuthenticated,
    error_responses,
)
from app.users.models import User
from app.users.schemas import UserPrivate

router = APIRouter(prefix="/accounts", tags=["accounts"])

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def _login_body(request: Request) -> LoginRequest:
    """The credentials, from JSON `{login, password}` or from the OAuth2 password form."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    try:
        if content_type in _FORM_TYPES:
            form = LoginForm.model_validate(dict((await request.form()).items()))
            return LoginRequest(login=form.username, password=form.password)
        return LoginRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from exc


_LOGIN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": LoginRequest.model_json_schema()},
            "application/x-www-form-urlencoded": {"schema": LoginForm.model_json_schema()},
        },
    }
}


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserPrivate,
    summary="Create an account",
    responses=error_responses(service.UsernameTaken, service.EmailTaken, WeakPassword),
)
async def register(body: RegisterRequest, session: SessionDep, hasher: PasswordHasherDep) -> User:
    """Create an account. The password must have 8+ characters, not only digits,
    and differ from the username and email."""
    return await service.register(
        session, hasher, username=body.username, email=body.email, password=body.password
    )


@router.post(
    "/login",
    response_model=TokenResponse,
    summary="Sign in and get an access token",
    openapi_extra=_LOGIN_BODY,
    responses=error_responses(InvalidCredentials, InactiveAccount, InvalidInput),
)
async def login(
    body: Annotated[LoginRequest, Depends(_login_body)],
    session: SessionDep,
    hasher: PasswordHasherDep,
    tokens: TokenServiceDep,
) -> TokenResponse:
    """Exchange a username (or email) and password for a bearer access token.
    Accepts JSON `{login, password}` or the OAuth2 password form used by /docs."""
    token = await service.login(session, hasher, tokens, login=body.login, password=body.password)
    return TokenResponse(access_token=token.token, expires_in=token.expires_in)


@router.get(
    "/profile",
    response_model=UserPrivate,
    summary="The signed-in user's profile",
    responses=error_responses(NotAuthenticated),
)
async def profile(user: CurrentUser) -> User:
    """The signed-in user, email included."""
    return user
