"""Bodies of the account endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, model_validator

from app.accounts.models import AccountSession
from app.schemas import RequestModel
from app.text import StorableStr
from app.users.identity_keys import Username

# Long enough for any passphrase, short enough that hashing it costs nothing extra.
Password = Annotated[StorableStr, StringConstraints(min_length=1, max_length=1024)]
Login = Annotated[StorableStr, StringConstraints(min_length=1, max_length=320)]


class RegisterRequest(RequestModel):
    """A new account; the password policy is listed at POST /accounts/register."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "username": "alice",
                    "email": "alice@example.com",
                    "password": "correct horse battery staple",
                    "password_confirm": "correct horse battery staple",
                }
            ]
        },
    )

    username: Username
    email: EmailStr = Field(max_length=320)
    password: Password
    password_confirm: Password

    @model_validator(mode="after")
    def _passwords_match(self) -> RegisterRequest:
        if self.password != self.password_confirm:
            raise ValueError("password and password_confirm differ")
        return self


class LoginRequest(RequestModel):
    """JSON login: `login` is the username or the email."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"login": "alice", "password": "correct horse battery staple"}]
        },
    )

    login: Login
    password: Password


class LoginForm(BaseModel):
    """The OAuth2 password form, as sent by the /docs Authorize button."""

    model_config = ConfigDict(extra="ignore")

    username: Login
    password: Password


# A generated token is 43 characters; a little room, and no unbounded input to hash.
LinkToken = Annotated[StorableStr, StringConstraints(min_length=1, max_length=256)]


class _PasswordPair(RequestModel):
    password: Password
    password_confirm: Password

    @model_validator(mode="after")
    def _passwords_match(self) -> _PasswordPair:
        if self.password != self.password_confirm:
            raise ValueError("password and password_confirm differ")
        return self


class TokenResponse(BaseModel):
    """A session's token pair: a short-lived access token and a refresh token."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...",
                    "token_type": "bearer",
                    "expires_in": 900,
                    "refresh_token": "Yk3n0v7w...",
                }
            ]
        }
    )

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_token: str = Field(
        description="Single-use: trade it at POST /accounts/refresh for a new pair."
    )


class RefreshRequest(RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"refresh_token": "Yk3n0v7w..."}]})

    refresh_token: LinkToken


class ChangePasswordRequest(_PasswordPair):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "old_password": "correct horse battery staple",
                    "password": "a new and longer passphrase",
                    "password_confirm": "a new and longer passphrase",
                }
            ]
        },
    )

    old_password: Password


class SendResetLinkRequest(RequestModel):
    """`login` is the username or the email."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"login": "alice@example.com"}]})

    login: Login


class ResetPasswordRequest(_PasswordPair):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "token": "the token from the mailed link",
                    "password": "a new and longer passphrase",
                    "password_confirm": "a new and longer passphrase",
                }
            ]
        },
    )

    token: LinkToken


class LinkTokenRequest(RequestModel):
    """A token from a mailed link."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"token": "the token from the mail"}]}
    )

    token: LinkToken


class ProfileUpdate(RequestModel):
    """Fields to change; omitted ones stay as they are. A new `email` needs the current
    `password` too."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"username": "alice2"},
                {"email": "new@example.com", "password": "correct horse battery staple"},
            ]
        },
    )

    username: Username | None = None
    email: EmailStr | None = Field(default=None, max_length=320)
    password: Password | None = Field(
        default=None, description="The current password; required when `email` is given."
    )

    @model_validator(mode="after")
    def _email_needs_password(self) -> ProfileUpdate:
        if self.email is not None and self.password is None:
            raise ValueError("password is required to change the email")
        return self


class DeleteAccountRequest(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"password": "correct horse battery staple"}]},
    )

    password: Password


class Message(BaseModel):
    """A plain acknowledgement."""

    detail: str


class ResendVerificationRequest(RequestModel):
    """`login` is the username or the email of the unconfirmed account."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"login": "alice@example.com"}]})

    login: Login


class SessionRead(BaseModel):
    """One sign-in session of the caller."""

    id: int
    created_at: datetime
    last_used_at: datetime = Field(
        description="The last refresh, or the last request within a few minutes' precision."
    )
    expires_at: datetime
    user_agent: str | None = Field(description="The browser or client, as it last said.")
    ip_address: str | None = Field(description="The address it was last used from.")
    current: bool = Field(description="Whether this is the session of the calling token.")

    @classmethod
    def of(cls, row: AccountSession, *, current_id: int) -> SessionRead:
        return cls(
            id=row.id,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            expires_at=row.expires_at,
            user_agent=row.user_agent,
            ip_address=row.ip_address,
            current=row.id == current_id,
        )


class SessionList(BaseModel):
    """The caller's live sessions, newest first."""

    items: list[SessionRead]
