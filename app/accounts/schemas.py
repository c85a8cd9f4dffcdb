"""Bodies of the account endpoints."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, model_validator

from app.text import StorableStr, Username

# Long enough for any passphrase, short enough that hashing it costs nothing extra.
Password = Annotated[StorableStr, StringConstraints(min_length=1, max_length=1024)]
Login = Annotated[StorableStr, StringConstraints(min_length=1, max_length=320)]


class RegisterRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
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


class LoginRequest(BaseModel):
    """JSON login: `login` is the username or the email."""

    model_config = ConfigDict(
        extra="forbid",
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


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int = Field(description="Seconds until the access token expires.")
