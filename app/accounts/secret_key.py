"""The key that signs tokens: the configured one, or in development one generated once."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from sqlalchemy import make_url

from app.config import Settings

logger = logging.getLogger(__name__)

SECRET_KEY_FILE_NAME = ".gallery-secret-key"  # noqa: S105 (a file name, not a secret)


def secret_key_path(settings: Settings) -> Path:
    """Where a generated development key lives: beside the SQLite file, else the working dir."""
    if settings.is_sqlite:
        database = make_url(settings.database_url).database
        if database and database != ":memory:":
            return Path(database).resolve().parent / SECRET_KEY_FILE_NAME
    return Path.cwd() / SECRET_KEY_FILE_NAME


def _create_key_file(path: Path) -> None:
    """Write a new key so that concurrent starters all end up reading the same one.

    The key is written in full to a private temporary file, then hard-linked into place:
    the link either appears complete or fails because another process won the race.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return
        logger.warning(
            "SECRET_KEY is not set: generated one and saved it in %s (development only; "
            "set SECRET_KEY in production)",
            path,
        )
    finally:
        temporary.unlink(missing_ok=True)


def resolve_secret_key(settings: Settings) -> str:
    """The configured SECRET_KEY, or (outside production) the generated development key.

    Called once at start-up; blocking file I/O is fine there.
    """
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    if settings.environment == "production":  # pragma: no cover - Settings refuses this
        raise RuntimeError("SECRET_KEY is required in production")
    path = secret_key_path(settings)
    if not path.exists():
        _create_key_file(path)
    key = path.read_text().strip()
    if not key:
        raise RuntimeError(f"the secret key file {path} is empty; delete it to make a new one")
    return key
