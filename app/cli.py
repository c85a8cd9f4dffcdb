"""The `gallery` command: serve the API and manage its database."""

from __future__ import annotations

import asyncio
import json
import logging.config
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
import uvicorn
from alembic import command
from alembic.config import Config
from pydantic import ValidationError

from app.config import Settings

T = TypeVar("T")

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _alembic_config(database_url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    # Our logging config applies (JSON or text), not alembic.ini's.
    config.attributes["configure_logger"] = False
    return config


def _configure_logging(settings: Settings) -> None:
    from app.ops.logs import logging_config

    logging.config.dictConfig(logging_config(settings))


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid settings:\n{exc}") from exc


@click.group()
def main() -> None:
    """Gallery API: users and their verified image URLs."""


@main.command()
def migrate() -> None:
    """Apply every pending database migration."""
    settings = _settings()
    _configure_logging(settings)
    command.upgrade(_alembic_config(settings.database_url), "head")


def _prepare_metrics_dir(settings: Settings) -> Path | None:
    """Several workers share their metrics through files in PROMETHEUS_MULTIPROC_DIR.

    Set here, before uvicorn starts the workers, so each one inherits it; emptied first
    because values left by an earlier run would be counted again. Returns the directory
    when it is a temporary one made here (removed when the server stops).
    """
    from app.ops.metrics import MULTIPROC_ENV, prepare_multiprocess_dir

    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        prepare_multiprocess_dir(Path(directory))
        return None
    if settings.web_concurrency == 1 or not settings.metrics_enabled:
        return None
    directory = tempfile.mkdtemp(prefix="gallery-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    return Path(directory)


@main.command()
@click.option(
    "--migrate/--no-migrate",
    "run_migrations",
    default=True,
    show_default=True,
    help="Apply pending migrations before serving.",
)
def serve(run_migrations: bool) -> None:
    """Serve the API on HOST:PORT with WEB_CONCURRENCY worker processes.

    Proxy headers (X-Forwarded-For/-Proto) are believed only from TRUSTED_PROXIES (the
    app reads them; uvicorn's own handling is off); on SIGTERM running requests get
    GRACEFUL_TIMEOUT seconds to finish.
    """
    settings = _settings()
    _configure_logging(settings)
    if run_migrations:
        command.upgrade(_alembic_config(settings.database_url), "head")
    temporary_metrics_dir = _prepare_metrics_dir(settings)
    keep_large_blocks_mapped()
    try:
        _run_server(settings)
    finally:
        if temporary_metrics_dir is not None:
            shutil.rmtree(temporary_metrics_dir, ignore_errors=True)


# glibc raises its mmap threshold to the size of the largest mapped block freed (up to 32
# MiB): once a password hash has freed Argon2's 19 MiB, later hashes take their memory from
# the heap, which stays resident after they finish (about 20 MB more per worker after a
# burst of logins; docs/performance.md, "Memory"). A fixed threshold keeps large blocks
# mapped and gives them back to the system when they are freed.
MALLOC_MMAP_THRESHOLD = ("MALLOC_MMAP_THRESHOLD_", str(256 * 1024))


def keep_large_blocks_mapped() -> None:
    """Set glibc's fixed mmap threshold for the worker processes about to start (glibc reads
    it when a process starts); a value the operator set is kept."""
    name, value = MALLOC_MMAP_THRESHOLD
    os.environ.setdefault(name, value)


def _run_server(settings: Settings) -> None:
    from app.ops.logs import logging_config

    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.web_concurrency,
        # The app settles the client address itself from TRUSTED_PROXIES
        # (app/ops/proxies.py); uvicorn's handling would believe loopback by default.
        proxy_headers=False,
        # httptools with bounds on the request headers' size and the time to send them
        # (MAX_HEADER_BYTES, HEADER_TIMEOUT), which uvicorn's own protocols do not enforce.
        http="app.ops.http_protocol:BoundedHttpToolsProtocol",
        timeout_graceful_shutdown=settings.graceful_timeout,
        log_config=logging_config(settings),
        # The app logs each request once, with its id; uvicorn's own line would repeat it.
        access_log=False,
        server_header=False,
    )


def _read_password() -> str:
    if sys.stdin.isatty():
        password: str = click.prompt(
            "Password", hide_input=True, confirmation_prompt=True, err=True
        )
        return password
    # Piped: the first line is the password (`printf '%s\n' "$PW" | gallery create-admin ...`).
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise click.ClickException("no password on standard input")
    return line


async def _create_admin(settings: Settings, username: str, email: str, password: str) -> int:
    from app.accounts import service as accounts_service
    from app.accounts.security import PasswordHasher
    from app.db import create_engine, create_sessionmaker

    engine = create_engine(settings)
    try:
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker() as session, session.begin():
            user = await accounts_service.create_user(
                session,
                PasswordHasher(),
                username=username,
                email=email,
                password=password,
                is_admin=True,
            )
            return user.id
    finally:
        await engine.dispose()


@main.command("create-admin")
@click.option("--username", required=True, help="The new administrator's username.")
@click.option("--email", required=True, help="The new administrator's email.")
def create_admin(username: str, email: str) -> None:
    """Create an administrator. The password is prompted for (twice), or read from stdin."""
    from app.accounts.schemas import RegisterRequest
    from app.errors import AppError

    settings = _settings()
    password = _read_password()
    try:
        # The same rules as POST /accounts/register (username and email formats).
        checked = RegisterRequest(
            username=username, email=email, password=password, password_confirm=password
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise click.ClickException(problems) from None
    try:
        user_id = asyncio.run(
            _create_admin(settings, checked.username, str(checked.email), password)
        )
    except AppError as exc:
        raise click.ClickException(f"{exc.detail} ({exc.code})") from None
    click.echo(f"created admin {checked.username!r} with id {user_id}")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop when it is installed (uvicorn[standard] brings it, and `gallery
    serve` runs on it), else on asyncio's own loop: a recheck is mostly event-loop work
    (connections, reads, timers), which uvloop does in C."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        return asyncio.run(main)
    return uvloop.run(main)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)


async def _run_worker(settings: Settings) -> None:
    from app.images.recheck import open_rechecker
    from app.ops.metrics import Metrics

    stop = asyncio.Event()
    _stop_on_signals(stop)
    metrics = None
    stop_metrics = None
    if settings.metrics_enabled and settings.worker_metrics_port:
        metrics = Metrics()
        stop_metrics = metrics.serve(settings.host, settings.worker_metrics_port)
    try:
        async with open_rechecker(
            settings,
            on_check=metrics.observe_image_check if metrics else None,
            on_outcome=metrics.observe_recheck if metrics else None,
        ) as rechecker:
            logging.getLogger("app.worker").info("recheck worker started (pid %d)", os.getpid())
            await rechecker.run(stop)
    finally:
        if stop_metrics is not None:
            stop_metrics()
        if metrics is not None:
            metrics.close()
    logging.getLogger("app.worker").info("recheck worker stopped")


@main.command()
def worker() -> None:
    """Recheck images as they come due, until SIGTERM or SIGINT.

    On the signal it stops claiming images, lets running checks finish (IMAGE_FETCH_TIMEOUT
    at most) and releases the images it claimed but did not check. Run as many as needed,
    on any machines sharing the database. Exits at once when RECHECK_ENABLED=false. With
    WORKER_METRICS_PORT set, serves its Prometheus metrics on HOST:WORKER_METRICS_PORT.
    """
    settings = _settings()
    _configure_logging(settings)
    if not settings.recheck_enabled:
        click.echo("RECHECK_ENABLED is false: no rechecks to run", err=True)
        return
    run_loop(_run_worker(settings))


async def _run_pass(settings: Settings) -> dict[str, object]:
    from app.images.recheck import open_rechecker

    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with open_rechecker(settings) as rechecker:
        result = await rechecker.run_pass(stop=stop)
    return {"claimed": result.claimed, "outcomes": dict(sorted(result.outcomes.items()))}


@main.command()
@click.option("--due", is_flag=True, help="Check every image due now, once.")
def recheck(due: bool) -> None:
    """Run one recheck pass and exit (for cron): prints what it did as JSON."""
    if not due:
        raise click.UsageError("say which images to recheck: --due")
    settings = _settings()
    _configure_logging(settings)
    if not settings.recheck_enabled:
        click.echo("RECHECK_ENABLED is false: no rechecks to run", err=True)
        return
    click.echo(json.dumps(run_loop(_run_pass(settings))))


@main.command()
@click.option("--indent", default=2, show_default=True, help="JSON indentation.")
def openapi(indent: int) -> None:
    """Print the OpenAPI document (JSON) to standard output."""
    from app.main import create_app

    spec = create_app(_settings()).openapi()
    click.echo(json.dumps(spec, indent=indent or None, ensure_ascii=False))
