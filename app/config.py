"""Settings, read once from the environment and `.env` (pydantic-settings)."""

from __future__ import annotations

import ipaddress
from functools import cached_property
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_IMAGE_TYPES = (
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
    "image/bmp",
)


# Signs tokens in development only: production refuses to start with it.
DEVELOPMENT_SECRET_KEY = "development-only-secret-key-do-not-use-in-production"  # noqa: S105
MIN_SECRET_KEY_BYTES = 32


def _split_csv(value: object) -> object:
    """Accept `a,b,c` from the environment as well as a real list."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every setting the service reads; `.env.example` lists them with their defaults."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    environment: Literal["development", "production", "test"] = "development"
    database_url: str = "sqlite+aiosqlite:///./gallery.db"
    database_pool_size: int = Field(default=10, ge=1)
    database_connect_timeout: float = Field(default=1.5, gt=0, le=60)
    secret_key: SecretStr = SecretStr(DEVELOPMENT_SECRET_KEY)
    access_token_expire_minutes: int = Field(default=15, ge=1)
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"

    admin_username: str | None = None
    admin_email: str | None = None
    admin_password: SecretStr | None = None

    image_allowed_types: Annotated[list[str], NoDecode] = list(DEFAULT_IMAGE_TYPES)
    image_fetch_timeout: float = Field(default=5.0, gt=0, le=60)
    image_fetch_allowed_networks: Annotated[list[str], NoDecode] = []

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    @field_validator("admin_username", "admin_email", "admin_password", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("image_allowed_types", mode="before")
    @classmethod
    def _parse_types(cls, value: object) -> object:
        parsed = _split_csv(value)
        if isinstance(parsed, list):
            return [str(item).lower() for item in parsed]
        return parsed

    @field_validator("image_fetch_allowed_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        parsed = _split_csv(value)
        if isinstance(parsed, list):
            for item in parsed:
                ipaddress.ip_network(str(item), strict=False)
        return parsed

    @model_validator(mode="after")
    def _refuse_insecure_production(self) -> Settings:
        if self.environment == "production":
            key = self.secret_key.get_secret_value()
            if key == DEVELOPMENT_SECRET_KEY or len(key.encode()) < MIN_SECRET_KEY_BYTES:
                raise ValueError(
                    f"SECRET_KEY must be set to a random value of at least {MIN_SECRET_KEY_BYTES}"
                    " bytes when ENVIRONMENT=production"
                )
        return self

    @cached_property
    def is_sqlite(self) -> bool:
        """Whether the database is the embedded SQLite file."""
        return self.database_url.startswith("sqlite")
