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
    # Media (README "Media: originals and thumbnails"). The proxy streams at most this many
    # bytes of an original; a thumbnail is made only from an original of at most this size.
    image_proxy_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, le=1024**3)
    # Refused from the header's dimensions before any decoder sees the pixels.
    image_max_pixels: int = Field(default=50_000_000, ge=1, le=1_000_000_000)
    thumbnail_sizes: Annotated[list[int], NoDecode] = [256, 1024]
    # Seconds one decoder process may spend on one thumbnail before it is killed.
    thumbnail_timeout: float = Field(default=10.0, gt=0, le=300)
    # Decoder processes per API process; 0: the usable cores shared out among WEB_CONCURRENCY.
    thumbnail_workers: int = Field(default=0, ge=0, le=64)
    # Address space of one decoder process (RLIMIT_AS): a 50-megapixel RGBA PNG needs ~200 MiB
    # decoded, plus the interpreter and the resampling buffers.
    thumbnail_memory_limit_mb: int = Field(default=1024, ge=128, le=65536)
    # Make every size of a new image's thumbnail in the background right after its 201.
    thumbnail_on_create: bool = True
    # How long a private image's signed `raw_url`/`thumbnail_url` may be used, at most: URLs
    # are issued in windows of a quarter of this, so each lives 3/4 of it to all of it.
    media_url_expire_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)

    # Link health (app/images/recheck.py): every image is checked again on a schedule.
    recheck_enabled: bool = True
    # Also run rechecks inside each `gallery serve` process (off when `gallery worker`s do it).
    recheck_in_process: bool = True
    recheck_interval_seconds: int = Field(default=86400, ge=1, le=365 * 86400)
    # After a failed check: this long, doubling per consecutive failure up to the interval.
    recheck_retry_seconds: int = Field(default=3600, ge=1, le=365 * 86400)
    recheck_broken_after: int = Field(default=3, ge=1, le=1000)
    # Per worker process: checks in flight in all, and per image host name.
    recheck_concurrency: int = Field(default=16, ge=1, le=1024)
    recheck_per_host_concurrency: int = Field(default=2, ge=1, le=1024)
    # How long a claimed image stays a worker's; a worker that dies loses it after this long.
    recheck_lease_seconds: int = Field(default=300, ge=2, le=86400)
    # Where `gallery worker` serves its Prometheus metrics (its recheck counts); 0: nowhere.
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)

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

    @field_validator("thumbnail_sizes", mode="before")
    @classmethod
    def _parse_thumbnail_sizes(cls, value: object) -> object:
        parsed = _split_csv(value)
        if isinstance(parsed, list):
            sizes = sorted({int(item) for item in parsed})
            if not sizes or not all(16 <= size <= 4096 for size in sizes):
                raise ValueError("thumbnail sizes must be between 16 and 4096 pixels")
            return sizes
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

    @model_validator(mode="after")
    def _lease_outlasts_a_check(self) -> Settings:
        # A lease that ran out while its check is still running would let a second worker
        # check the same image at the same time.
        if self.recheck_lease_seconds <= self.image_fetch_timeout:
            raise ValueError("RECHECK_LEASE_SECONDS must be longer than IMAGE_FETCH_TIMEOUT")
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
    def thumbnail_worker_count(self) -> int:
        """How many decoder processes one API process may run (`THUMBNAIL_WORKERS`)."""
        if self.thumbnail_workers:
            return self.thumbnail_workers
        return max(1, usable_cores() // self.web_concurrency)

    @cached_property
    def is_sqlite(self) -> bool:
        """Whether the database is the embedded SQLite file."""
        return self.database_url.startswith("sqlite")
