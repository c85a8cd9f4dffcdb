"""What can go wrong with who is calling and with their account."""

from __future__ import annotations

from typing import ClassVar

from fastapi import status

from app.errors import AppError, Forbidden, NotFound


class NotAuthenticated(AppError):
    status_code = status.HTTP_401_UNAUTHORIZED
    code = "not_authenticated"
    detail = "Authentication is required: send `Authorization: Bearer <token>`."
    headers: ClassVar[dict[str, str] | None] = {"WWW-Authenticate": "Bearer"}


class InvalidToken(NotAuthenticated):
    code = "invalid_token"
    detail = "The access token is invalid or has expired."


class InvalidCredentials(NotAuthenticated):
    code = "invalid_credentials"
    detail = "Incorrect login or password."


class InactiveAccount(NotAuthenticated):
    code = "inactive_account"
    detail = "This account is deactivated."


class AdminRequired(Forbidden):
    code = "admin_required"
    detail = "This operation is for administrators."


class AccountNotVerified(Forbidden):
    code = "account_not_verified"
    detail = "Verify your email address first: follow the link in the mail we sent."


class WrongPassword(Forbidden):
    code = "wrong_password"
    detail = "The current password is not correct."


class InvalidLinkToken(AppError):
    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid_link_token"
    detail = "This link is invalid, has expired or was already used."


class SessionNotFound(NotFound):
    code = "session_not_found"
    detail = "No such session among yours."
