"""Fixtures: a fresh database per backend and test run, an app per test, an HTTP client.

Every test runs on SQLite, and again on PostgreSQL when TEST_DATABASE_URL is set. Each
test run migrates its own new database with alembic; each test starts from empty tables.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.config import Config
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from app.config import DEVELOPMENT_SECRET_KEY, Settings
from app.images.fetcher import Resolver
from app.main import create_app
from tests.support.helpers import ISSUED_TOKENS, PASSWORD
from tests.support.image_host import ImageHost, LoopbackResolver
from tests.support.log_capture import LogCapture, find_leaks
from tests.support.mail_server import MailServer

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET = "test-secret-key-that-is-long-enough-for-hs256-0123456789"
TABLES = ("account_tokens", "refresh_tokens", "account_sessions", "images", "users")


# Passwords and keys the tests use: none may ever be logged.
KNOWN_SECRETS = (
    PASSWORD,
    TEST_SECRET,
    DEVELOPMENT_SECRET_KEY,
    "first-admin-password",
    "another-password-entirely",
)


APPS_STARTED: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def run_logs() -> Iterator[LogCapture]:
    """Capture every log line of the whole run; at the end, fail if any shows a secret."""
    capture = LogCapture()
    root = logging.getLogger()
    app_logger = logging.getLogger("app")
    levels = (root.level, app_logger.level)
    root.setLevel(logging.INFO)
    app_logger.setLevel(logging.DEBUG)
    root.addHandler(capture)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(levels[0])
        app_logger.setLevel(levels[1])
    # Not vacuous: when apps served requests, their access lines were captured.
    if APPS_STARTED:
        assert any(r.name == "app.access" for r in capture.records), "no access log captured"
    leaks = find_leaks(capture.lines, [*KNOWN_SECRETS, *ISSUED_TOKENS])
    assert not leaks, "secrets in the logs:\n" + "\n".join(leaks[:20])


def _backends() -> list[str]:
    return ["sqlite", "postgresql"] if os.environ.get("TEST_DATABASE_URL") else ["sqlite"]


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    return config


async def migrate(database_url: str, revision: str, *, down: bool = False) -> None:
    """Run alembic in a worker thread: its env.py runs its own event loop."""
    config = alembic_config(database_url)
    if down:
        await asyncio.to_thread(command.downgrade, config, revision)
    else:
        await asyncio.to_thread(command.upgrade, config, revision)


async def _create_postgres_database(server_url: str) -> str:
    url = make_url(server_url)
    if not url.drivername.startswith("postgresql+asyncpg"):
        url = url.set(drivername="postgresql+asyncpg")
    name = f"gallery_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


async def _drop_postgres_database(server_url: str, database_url: str) -> None:
    name = make_url(database_url).database
    admin = create_async_engine(
        make_url(server_url).set(drivername="postgresql+asyncpg"), isolation_level="AUTOCOMMIT"
    )
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@asynccontextmanager
async def new_database(backend: str, directory: Path) -> AsyncIterator[str]:
    """An empty database of its own on `backend`, dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{directory / f'gallery-{uuid.uuid4().hex[:8]}.db'}"
        return
    server_url = os.environ["TEST_DATABASE_URL"]
    url = await _create_postgres_database(server_url)
    try:
        yield url
    finally:
        await _drop_postgres_database(server_url, url)


@pytest.fixture(scope="session", params=_backends())
def backend(request: pytest.FixtureRequest) -> str:
    """`sqlite`, and `postgresql` when TEST_DATABASE_URL is set."""
    return str(request.param)


@pytest.fixture(scope="session")
async def database_url(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """A new database for this test run on one backend, migrated to head by alembic."""
    async with new_database(backend, tmp_path_factory.mktemp("db")) as url:
        await migrate(url, "head")
        yield url


@pytest.fixture(scope="session")
def image_host() -> Iterator[ImageHost]:
    """A real HTTP server on 127.0.0.1 that serves images, HTML, errors and slow answers."""
    host = ImageHost()
    host.start()
    yield host
    host.stop()


@pytest.fixture(scope="session")
def mail_server() -> Iterator[MailServer]:
    """A real SMTP server on 127.0.0.1 that keeps every mail it receives."""
    server = MailServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mail(mail_server: MailServer) -> Iterator[MailServer]:
    """The SMTP server, emptied for this test; pair it with `mail_settings` overrides."""
    mail_server.clear()
    yield mail_server
    mail_server.clear()


def mail_settings(server: MailServer) -> dict[str, Any]:
    """Settings that deliver account mail to the test SMTP server."""
    return {
        "smtp_host": "127.0.0.1",
        "smtp_port": server.port,
        "smtp_starttls": False,
        "smtp_timeout": 2.0,
        "frontend_url": "http://app.test",
    }


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "secret_key": TEST_SECRET,
        "image_fetch_timeout": 1.0,
        # The image hosts tests start on 127.0.0.1 are exempt from the SSRF guard; every
        # other address, 127.0.0.2 included, stays forbidden.
        "image_fetch_allowed_networks": ["127.0.0.1/32"],
        # Limits are tested on their own (tests/accounts/test_rate_limits.py); elsewhere
        # a suite's many sign-ins must not trip them.
        "rate_limit_enabled": False,
        "smtp_host": None,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def empty_tables(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(
                    text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
                )
            else:
                for table in TABLES:
                    await connection.execute(text(f"DELETE FROM {table}"))  # noqa: S608
    finally:
        await engine.dispose()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module to change the app's settings for its tests."""
    return {}


@pytest.fixture
def image_resolver() -> Resolver | None:
    """The URL check's DNS in tests: loopback names only (override in a test module)."""
    return LoopbackResolver()


@pytest.fixture
async def app(
    database_url: str, settings_overrides: dict[str, Any], image_resolver: Resolver | None
) -> AsyncIterator[FastAPI]:
    """A started app on this backend's database; tables are emptied after the test."""
    application = create_app(
        make_settings(database_url, **settings_overrides), image_resolver=image_resolver
    )
    APPS_STARTED.append(database_url)
    try:
        async with LifespanManager(application):
            yield application
    finally:
        await empty_tables(database_url)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
