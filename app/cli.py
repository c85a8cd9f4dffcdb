"""The `gallery` command: serve the API and manage its database."""

from __future__ import annotations

from pathlib import Path

import click
import uvicorn
from alembic import command
from alembic.config import Config

from app.config import Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _alembic_config(database_url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    return config


@click.group()
def main() -> None:
    """Gallery API: users and their verified image URLs."""


@main.command()
def migrate() -> None:
    """Apply every pending database migration."""
    settings = Settings()
    command.upgrade(_alembic_config(settings.database_url), "head")


@main.command()
@click.option(
    "--migrate/--no-migrate",
    "run_migrations",
    default=True,
    show_default=True,
    help="Apply pending migrations before serving.",
)
def serve(run_migrations: bool) -> None:
    """Serve the API on HOST:PORT (default 127.0.0.1:8000)."""
    settings = Settings()
    if run_migrations:
        command.upgrade(_alembic_config(settings.database_url), "head")
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        proxy_headers=False,
    )
