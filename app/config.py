"""Settings, read once from the environment and `.env` (pydantic-settings)."""

from __future__ import annotations

import ipaddress
import os
from functools import cached_property
from typing import Annotated, Literal

from limits import parse_many
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


# Values that have been published as examples: production refuses to start with them.
DEVELOPMENT_SECRET_KEY = "development-only-secret-key-do-not-use-in-production"  # noqa: S105
EXAMPLE_SECRET_KEYS = frozenset({DEVELOPMENT_SECRET_KEY, "change-me", "changeme", "secret"})
MIN_SECRET_KEY_BYTES = 32


def _split_csv(value: object) -> object:
    """Accept `a,b,c` from the environment as well as a real list."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's cpuset),
    not every core of the host."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


class Settings(BaseSettings):
    """Every setting the service reads; `.env.example` lists them with their defaults."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    environment: Literal["development", "production", "test"] = "development"
    database_url: str = "sqlite+aiosqlite:///./gallery.db"
    database_pool_size: int = Field(default=10, ge=1)
    database_connect_timeout: float = Field(default=1.5, gt=0, le=60)
    # Unset in development: a key is generated once and kept beside the database
    # (app/accounts/secret_key.py). Production refuses to start without a strong one.
    secret_key: SecretStr | None = None
    access_token_expire_minutes: int = Field(default=15, ge=1)
    refresh_token_expire_days: int = Field(default=14, ge=1)
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    # Threads per process that hash passwords; 0: the cores shared out among WEB_CONCURRENCY
    # workers (at least one). More hashing threads than cores made every hash slower (each
    # one walks 19 MiB) and starved the event loops: with 2 workers on 2 cores a login cost
    # 36-45 ms of CPU with 2 threads each and 30-32 ms with 1, and reads during a login flood
    # answered in a third of the time.
    password_hash_threads: int = Field(default=0, ge=0, le=64)

    register_verification_enabled: bool = False
    reset_password_expire_minutes: int = Field(default=60, ge=1)
    verification_expire_hours: int = Field(default=48, ge=1)

    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    smtp_timeout: float = Field(default=10.0, gt=0, le=120)
    mail_from: str = "Gallery API <no-reply@localhost>"
    frontend_url: str = "http://127.0.0.1:8000"

    rate_limit_enabled: bool = True
    rate_limit_login_per_account: str = "10/minute"
    rate_limit_login_per_address: str = "30/minute"
    rate_limit_register_per_address: str = "10/hour"
    rate_limit_reset_per_address: str = "5/hour"
    # Reset mails per account (or per unknown login): over it the answer is still 202.
    rate_limit_reset_per_account: str = "3/hour"
    rate_limit_resend_verification_per_address: str = "5/hour"
    # Over this one the answer stays 202 and no mail goes out: a 429 would tell the account
    # exists (and is unconfirmed).
    rate_limit_resend_verification_per_account: str = "3/hour"
    redis_url: str | None = None
    rate_limit_key_prefix: str = "gallery-api"
    # The proxies whose X-Forwarded-For/-Proto are believed (app/ops/proxies.py); empty:
    # nobody's, so a client cannot pick the address its limits, logs and /metrics see.
    trusted_proxies: Annotated[list[str], NoDecode] = []

    admin_username: str | None = None
    admin_email: str | None = None
    admin_password: SecretStr | None = None

    image_allowed_types: Annotated[list[str], NoDecode] = list(DEFAULT_IMAGE_TYPES)
    image_fetch_timeout: float = Field(default=5.0, gt=0, le=60)
    image_fetch_allowed_networks: Annotated[list[str], NoDecode] = []
    image_fetch_allowed_ports: Annotated[list[int], NoDecode] = []
    image_fetch_max_redirects: int = Field(default=3, ge=0, le=20)
    # Each check holds its turn for two round trips to the image host (HEAD, then GET), so a
    # process needs about (creates/s) x (check time) turns, more while its loop is busy: with
    # 32, creates against a 100 ms host ran at half the 0 ms rate (2 workers, 128 clients).
    # A turn costs at most one outbound connection and a 64 KiB window.
    image_fetch_concurrency: int = Field(default=128, ge=1, le=1024)
    image_sniff: bool = True

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # What a client can make `gallery serve` hold before its request starts, with no proxy
    # in front (app/ops/http_protocol.py): the request line and headers, in bytes, and the
    # seconds it may take to send them.
    max_header_bytes: int = Field(default=64 * 1024, ge=8 * 1024, le=1024 * 1024)
    header_timeout: float = Field(default=10.0, gt=0, le=300)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    web_concurrency: int = Field(default=1, ge=1, le=64)
    graceful_timeout: int = Field(default=20, ge=1, le=600)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    docs_enabled: bool = True
    metrics_enabled: bool = True
    metrics_allowed_networks: Annotated[list[str], NoDecode] = []
    cors_origins: Annotated[list[str], NoDecode] = []
    allowed_hosts: Annotated[list[str], NoDecode] = ["*"]

    @field_validator(
        "admin_username",
        "admin_email",
        "admin_password",
        "secret_key",
        "smtp_host",
        "smtp_username",
        "smtp_password",
        "redis_url",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _normalise_case(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            return value.lower() if value.lower() in ("text", "json") else value.upper()
        return value

    @field_validator("cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _parse_lists(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("image_allowed_types", mode="before")
    @classmethod
    def _parse_types(cls, value: object) -> object:
        parsed = _split_csv(value)
        if isinstance(parsed, list):
            return [str(item).lower() for item in parsed]
        return parsed

    @field_validator(
        "rate_limit_login_per_account",
        "rate_limit_login_per_address",
        "rate_limit_register_per_address",
        "rate_limit_reset_per_address",
        "rate_limit_reset_per_account",
        "rate_limit_resend_verification_per_address",
        "rate_limit_resend_verification_per_account",
    )
    @classmethod
    def _parse_rate_limit(cls, value: str) -> str:
        # Fail at start-up, not at the first login, on a limit the library cannot read.
        parse_many(value)
        return value

    @field_validator("frontend_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator(
        "image_fetch_allowed_networks", "trusted_proxies", "metrics_allowed_networks", mode="before"
    )
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        parsed = _split_csv(value)
        if isinstance(parsed, list):
            for item in parsed:
                ipaddress.ip_network(str(item), strict=False)
        return parsed

    @field_validator("image_fetch_allowed_ports", mode="before")
    @classmethod
    def _parse_ports(cls, value: object) -> object:
        parsed = _split_csv(value)
        if isinstance(parsed, list):
            ports = [int(item) for item in parsed]
            if not all(0 < port < 65536 for port in ports):
                raise ValueError("ports must be between 1 and 65535")
            return ports
        return parsed

    @model_validator(mode="after")
    def _refuse_insecure_production(self) -> Settings:
        if self.environment == "production":
            key = self.secret_key.get_secret_value() if self.secret_key else ""
            if key in EXAMPLE_SECRET_KEYS or len(key.encode()) < MIN_SECRET_KEY_BYTES:
                raise ValueError(
                    f"SECRET_KEY must be set to a random value of at least {MIN_SECRET_KEY_BYTES}"
                    " bytes when ENVIRONMENT=production"
                )
        return self

    @cached_property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The proxies whose `X-Forwarded-For` is believed."""
        return tuple(ipaddress.ip_network(item, strict=False) for item in self.trusted_proxies)

    @cached_property
    def password_hash_concurrency(self) -> int:
        """How many passwords one process hashes at once (`PASSWORD_HASH_THREADS`)."""
        if self.password_hash_threads:
            return self.password_hash_threads
        return max(1, usable_cores() // self.web_concurrency)

    @cached_property
    def is_sqlite(self) -> bool:
        """Whether the database is the embedded SQLite file."""
        return self.database_url.startswith("sqlite")
